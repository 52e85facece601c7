"""Host side of the trainer's input: batch conventions, micro-batch stacking and global array assembly.

Every process reads only its own slice of the global batch (per-host data sharding); `to_global` assembles the
process-local numpy arrays into global jax.Arrays laid out over the mesh's batch axes, so the same code runs on one
CPU and on a multi-host pod.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vinci_jax import sharding

IGNORE_INDEX = -100

# logical axis names per batch key; keys not listed are replicated (e.g. vision patches, vision metadata).
BATCH_AXES: dict[str, tuple[str | None, ...]] = {
    "input_ids": ("batch", "seq"),
    "targets": ("batch", "seq"),
    "loss_mask": ("batch", "seq"),
    "segment_ids": ("batch", "seq"),
    "attention_mask": ("batch", "seq"),
    "position_ids": (None, "batch", "seq"),
}


def to_trainer_convention(batch: Mapping[str, Any]) -> dict[str, Any]:
    """Ensure `targets`/`loss_mask` (already shifted: position t predicts targets[t]) exist.

    Accepts HF-style unshifted `labels` (IGNORE_INDEX where no loss) as produced by SFT collators.
    """
    out = dict(batch)
    if "targets" in out and "loss_mask" in out:
        out["loss_mask"] = np.asarray(out["loss_mask"], np.float32)
        return out
    if "labels" not in out:
        raise KeyError(f"batch has neither targets+loss_mask nor labels; keys: {sorted(out)}")
    labels = np.asarray(out.pop("labels"))
    targets = np.zeros_like(labels)
    targets[:, :-1] = labels[:, 1:]
    mask = np.zeros(labels.shape, np.float32)
    mask[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    if "segment_ids" in out:  # never predict across a packing boundary
        seg = np.asarray(out["segment_ids"])
        mask[:, :-1] *= seg[:, 1:] == seg[:, :-1]
    out["targets"] = np.where(mask > 0, targets, 0).astype(np.int32)
    out["loss_mask"] = mask
    return out


def align_vision_inputs(batches: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Micro-batches whose vision inputs share one layout: the largest rows x row length of the step (smaller ones
    padded, image-free ones given blank inputs), so that they stack."""
    visions = [b.get("vision_inputs") for b in batches]
    present = [v for v in visions if v is not None]
    shapes = {tuple(np.shape(leaf) for leaf in jax.tree.leaves(v)) for v in present}
    if not present or (len(present) == len(visions) and len(shapes) == 1):
        return [dict(b) for b in batches]  # nothing to pad (the usual case): no copies
    from vinci_jax.models.vision_inputs import blank_like, pad_vision_inputs

    groups = int(present[0].groups)
    rows = max(np.shape(v.pixel_values)[0] // groups for v in present)
    length = max(np.shape(v.pixel_values)[1] for v in present)
    out = []
    for batch, vision in zip(batches, visions, strict=True):
        vision = blank_like(present[0]) if vision is None else vision
        out.append({**batch, "vision_inputs": pad_vision_inputs(vision, rows, length)})
    return out


def stack_micro_batches(batches: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """[A] micro-batches -> one batch whose leaves have a leading micro-batch axis (gradient accumulation)."""
    batches = align_vision_inputs(batches)
    shapes = [jax.tree.map(np.shape, dict(b)) for b in batches]
    if any(s != shapes[0] for s in shapes[1:]):
        raise ValueError(
            "micro-batches of one accumulation step differ in shape (e.g. padding-mode length buckets); pad them to "
            f"one bucket or set grad_accum_steps=1. shapes: {shapes}"
        )
    return jax.tree.map(lambda *xs: np.stack(xs), *batches)


def _vision_axes(vision: Any, ndim: int) -> tuple[str | None, ...] | None:
    """Grouped vision inputs (one block per batch shard) split their first axis like the batch; else replicated."""
    if int(getattr(vision, "groups", 1)) == 1:
        return None
    return ("batch",) + (None,) * (ndim - 1)


def batch_shardings(batch: Mapping[str, Any], mesh: Mesh, *, accum: bool = False) -> dict[str, Any]:
    """NamedSharding per batch leaf (global shapes are local shapes times the process count on the batch dim)."""

    def one(key: str, leaf: Any, vision: Any = None) -> NamedSharding:
        names = BATCH_AXES.get(key) if vision is None else _vision_axes(vision, np.ndim(leaf) - int(accum))
        if names is None:
            return NamedSharding(mesh, PartitionSpec())
        names = ((None,) if accum else ()) + names
        shape = list(np.shape(leaf))
        batch_dim = names.index("batch")
        shape[batch_dim] *= jax.process_count()
        return NamedSharding(mesh, sharding.logical_to_spec(names, shape, mesh))

    out = {}
    for key, value in batch.items():
        vision = value if key == "vision_inputs" else None
        out[key] = jax.tree.map(lambda leaf, k=key, v=vision: one(k, leaf, v), value)
    return out


def to_global(batch: Mapping[str, Any], shardings: Mapping[str, Any]) -> dict[str, Any]:
    """Process-local numpy leaves -> global jax.Arrays (leaves already on device are passed through)."""

    def put(key: str, leaf: Any, shd: NamedSharding) -> jax.Array:
        if isinstance(leaf, jax.Array):
            return leaf
        leaf = np.asarray(leaf)
        if shd.spec == PartitionSpec():
            if jax.process_count() > 1:
                raise NotImplementedError(
                    f"batch field {key!r} is replicated, but with {jax.process_count()} processes each host holds "
                    "different rows; multi-host batches need every field split along the batch (see BATCH_AXES)"
                )
            return jax.device_put(leaf, shd)
        return jax.make_array_from_process_local_data(shd, leaf)

    return {
        key: jax.tree.map(lambda leaf, shd, k=key: put(k, leaf, shd), value, shardings[key])
        for key, value in batch.items()
    }


class BatchAssembler:
    """Pulls `accum_steps` local batches per train step and turns them into global arrays on the mesh."""

    def __init__(self, iterator: Iterator[Mapping[str, Any]], mesh: Mesh, accum_steps: int = 1):
        self.iterator, self.mesh, self.accum_steps = iterator, mesh, accum_steps
        self.shardings: dict[str, Any] | None = None

    def next_local(self) -> dict[str, Any]:
        micro = [to_trainer_convention(next(self.iterator)) for _ in range(self.accum_steps)]
        return micro[0] if self.accum_steps == 1 else stack_micro_batches(micro)

    def __next__(self) -> dict[str, Any]:
        local = self.next_local()
        if self.shardings is None:
            self.shardings = batch_shardings(local, self.mesh, accum=self.accum_steps > 1)
        return to_global(local, self.shardings)

    def __iter__(self) -> BatchAssembler:
        return self
