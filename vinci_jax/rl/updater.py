"""One GRPO policy update from a step's rollouts: advantages, micro-batches, accumulated gradients, apply.

Kept apart from the ViRL job so that a small loop (tests, the toy run, a future async trainer) can drive the same
update without the data pipeline or checkpointing around it.

Rows are packed (see vinci_jax.rl.batch): rollouts first-fit into rows of one fixed length, micro-batches of a
few bucketed shapes. Every new micro-batch shape (one compile of the gradient) is logged and counted
(`compiled_shapes`); `layout="padded"` keeps one rollout per row, padded to powers of two (the layout before packing,
kept for comparison and for the per-sequence loss aggregations, which need one sequence per row).
`layout="shared_prefix"` puts one group per row: its prompt once, then its n responses in fixed slots (see
vinci_jax.rl.batch); `group_rows` groups per micro-batch (0: micro_batch_rows / group_size, about as many responses
as the other layouts; a pod sets one group row per chip), groups ordered by their longest response so that slot
padding stays small.

A step whose loss or accumulated gradient is not finite is skipped: the optimizer is not applied, the state comes
back unchanged (its buffers are only donated to the apply), and the step is logged and counted
(`skipped_nonfinite` in the metrics, `GRPOUpdater.skipped_steps` in total). One NaN would otherwise poison every
parameter and every later step.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from jax.sharding import Mesh

from vinci_jax import sharding
from vinci_jax.models.attention import BranchedSegments
from vinci_jax.rl import algorithms as alg
from vinci_jax.rl.batch import (
    RolloutRef,
    build_micro_batch,
    build_packed_micro_batch,
    build_shared_prefix_micro_batch,
    first_fit,
    row_bucket,
    slot_length,
)
from vinci_jax.rl.grpo_step import GRPOLossConfig, add_trees, make_apply_fn, make_grad_fn, make_logprob_fn
from vinci_jax.rl.rollout import Rollouts
from vinci_jax.train import train_state as ts

LAYOUTS = ("packed", "padded", "shared_prefix")


class GRPOUpdater:
    """Turns rollouts into one optimizer step on a train state {params, opt_state, step}."""

    def __init__(
        self,
        split: ts.SplitModel,
        optimizer: Any,
        schedule: Any,
        trainable: Any,
        loss: GRPOLossConfig,
        mesh: Mesh,
        *,
        group_size: int,
        advantage: str = "grpo",
        filter_equal_groups: bool = False,
        micro_batch_rows: int = 16,
        vision_config: Any,
        pad_token_id: int,
        state_shardings: Any = None,
        reference_params: Any = None,
        layout: str = "packed",
        row_length: int = 0,
        group_rows: int = 0,
    ):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if layout != "padded" and loss.loss_agg != "token-mean":
            raise ValueError(f"{loss.loss_agg} averages per sequence and needs one sequence per row: layout='padded'")
        # packed row length: fixed by the caller, else (0) the widest prompt bucket + response capacity of a step
        self.layout, self.row_length = layout, int(row_length)
        self.shapes: set[Any] = set()
        self.loss, self.mesh = loss, mesh
        self.group_size, self.micro_batch_rows = int(group_size), int(micro_batch_rows)
        # shared_prefix: group rows per micro-batch (0: about micro_batch_rows rollouts' worth)
        self.group_rows = int(group_rows) or max(1, self.micro_batch_rows // self.group_size)
        self.estimator = alg.lookup(alg.ADVANTAGES, advantage, "advantage estimator")
        self.filter_equal_groups = filter_equal_groups
        self.vision_config, self.pad_token_id = vision_config, pad_token_id
        self.reference_params = reference_params if loss.kl_coef > 0 else None
        if loss.kl_coef > 0 and reference_params is None:
            raise ValueError("kl_coef > 0 needs reference_params (the frozen initial policy)")
        with jax.set_mesh(mesh):
            param_shardings = None if state_shardings is None else state_shardings["params"]
            self.grad_fn = jax.jit(make_grad_fn(split, loss, trainable, param_shardings))
            self.logprob_fn = jax.jit(make_logprob_fn(split, loss.temperature, loss.logit_chunk))
            self.apply_fn = jax.jit(
                make_apply_fn(optimizer, schedule), donate_argnums=0, out_shardings=(state_shardings, None)
            )
            self.accumulate = jax.jit(add_trees, donate_argnums=0)  # one executable per micro-batch, not one per leaf
            self.finite = jax.jit(_all_finite)
        self.skipped_steps = 0
        # XLA:CPU runs each multi-device executable's collectives on a shared thread pool; two in flight at once can
        # starve each other's rendezvous (observed with 8 fake devices on 2 cores). Accelerators keep async dispatch.
        self.serialize = jax.default_backend() == "cpu"

    def advantages(self, rewards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(advantage per rollout, rows kept); groups of all-equal rewards are dropped when filtering is on."""
        advantages = self.estimator(rewards, self.group_size)
        keep = np.ones_like(rewards, bool)
        if self.filter_equal_groups:
            keep = np.repeat(alg.informative_groups(rewards, self.group_size), self.group_size)
        return advantages, keep

    def micro_batches(self, rollouts: Rollouts, advantages: np.ndarray, keep: np.ndarray) -> Iterator[dict]:
        if self.layout == "packed":
            yield from self._packed_micro_batches(rollouts, advantages, keep)
            return
        if self.layout == "shared_prefix":
            yield from self._shared_prefix_micro_batches(rollouts, advantages, keep)
            return
        offset = 0
        for chunk in rollouts.chunks:
            count = chunk.samples.tokens.shape[0]
            rows = [r for r in range(count) if keep[offset + r]]
            for start in range(0, len(rows), self.micro_batch_rows):
                yield build_micro_batch(
                    rows[start : start + self.micro_batch_rows],
                    chunk.prompts,
                    chunk.raw,
                    chunk.samples,
                    advantages[offset : offset + count],
                    self.vision_config,
                    self.pad_token_id,
                )
            offset += count

    def packed_row_length(self, rollouts: Rollouts) -> int:
        return self.row_length or max(c.prompts.input_ids.shape[1] + c.samples.tokens.shape[1] for c in rollouts.chunks)

    def _packed_micro_batches(self, rollouts: Rollouts, advantages: np.ndarray, keep: np.ndarray) -> Iterator[dict]:
        refs, offset = [], 0
        for chunk in rollouts.chunks:
            count = chunk.samples.tokens.shape[0]
            refs += [
                RolloutRef(chunk.prompts, chunk.raw, chunk.samples, r, float(advantages[offset + r]))
                for r in range(count)
                if keep[offset + r]
            ]
            offset += count
        row_length = self.packed_row_length(rollouts)
        bins = first_fit([ref.length for ref in refs], row_length)
        for start in range(0, len(bins), self.micro_batch_rows):
            rows = [[refs[i] for i in b] for b in bins[start : start + self.micro_batch_rows]]
            yield build_packed_micro_batch(
                rows, row_length, self.vision_config, self.pad_token_id,
                num_rows=row_bucket(len(rows), self.micro_batch_rows),
            )  # fmt: skip

    def _shared_prefix_micro_batches(
        self, rollouts: Rollouts, advantages: np.ndarray, keep: np.ndarray
    ) -> Iterator[dict]:
        groups, offset = [], 0
        for chunk in rollouts.chunks:
            count = chunk.samples.tokens.shape[0]
            by_prompt: dict[int, list[RolloutRef]] = {}
            for r in range(count):
                if keep[offset + r]:
                    ref = RolloutRef(chunk.prompts, chunk.raw, chunk.samples, r, float(advantages[offset + r]))
                    by_prompt.setdefault(ref.prompt_index, []).append(ref)
            groups += list(by_prompt.values())
            offset += count
        if not groups:
            return
        groups.sort(key=lambda g: -max(ref.response_length for ref in g))  # stable: ties keep rollout order
        # slots bucketed (at most 8 sizes each): the longest real prompt of the step, a micro-batch's longest response
        widest = max(c.prompts.input_ids.shape[1] for c in rollouts.chunks)
        prompt_slot = slot_length(max(g[0].length - g[0].response_length for g in groups), widest)
        capacity = max(c.samples.tokens.shape[1] for c in rollouts.chunks)
        slots_per_row = max([self.group_size] + [len(g) for g in groups])
        per_micro = self.group_rows
        for start in range(0, len(groups), per_micro):
            rows = groups[start : start + per_micro]
            longest = max(ref.response_length for g in rows for ref in g)
            yield build_shared_prefix_micro_batch(
                rows, prompt_slot, slot_length(longest, capacity), slots_per_row, self.vision_config,
                self.pad_token_id, num_rows=row_bucket(len(rows), per_micro),
            )  # fmt: skip

    def _note_shape(self, micro: dict[str, Any]) -> None:
        """Count (and log) each new micro-batch shape: each is one more compile of the gradient."""
        leaves, tree = jax.tree.flatten(micro)
        signature = (str(tree), tuple((np.shape(x), str(np.asarray(x).dtype)) for x in leaves))
        if signature not in self.shapes:
            self.shapes.add(signature)
            shape = {k: np.shape(v) for k, v in micro.items() if k in ("input_ids", "targets")}
            logging.info("GRPO update: micro-batch shape %d (%s; compiles the gradient)", len(self.shapes), shape)

    def _place(self, micro: dict[str, Any]) -> dict[str, Any]:
        """Rows over the batch axes of the mesh; image inputs and scalars replicated."""
        placed = dict(micro)
        for key, value in micro.items():
            if key in ("vision_inputs", "response_start") or value is None:
                continue
            if isinstance(value, BranchedSegments):
                ids = value.segment_ids
                placed[key] = BranchedSegments(
                    jax.device_put(ids, sharding.named_sharding(self.mesh, ("batch", None), ids.shape)), value.slots
                )
                continue
            names = (None, "batch", None) if key == "position_ids" else ("batch",) + (None,) * (value.ndim - 1)
            placed[key] = jax.device_put(value, sharding.named_sharding(self.mesh, names, value.shape))
        return placed

    def update(self, state: ts.TrainState, rollouts: Rollouts) -> tuple[ts.TrainState, dict[str, float]]:
        advantages, keep = self.advantages(rollouts.rewards)
        micro_batches = list(self.micro_batches(rollouts, advantages, keep))
        for micro in micro_batches:
            self._note_shape(micro)
        micro_batches = [self._place(m) for m in micro_batches]
        if not micro_batches:
            return state, {"groups_kept": 0.0}
        total_tokens = sum(float(m["response_mask"].sum()) for m in micro_batches)
        sequences = sum(float((m["response_mask"].sum(axis=1) > 0).sum()) for m in micro_batches)  # padded: 1 per row
        normaliser = jnp.float32(total_tokens if self.loss.loss_agg == "token-mean" else sequences)
        grads = stats = None
        with jax.set_mesh(self.mesh):
            for micro in micro_batches:
                if self.loss.old_logprobs == "recomputed":
                    micro["old_logprobs"] = self.logprob_fn(state["params"], micro)
                if self.reference_params is not None:
                    micro["ref_logprobs"] = self.logprob_fn(self.reference_params, micro)
                g, s = self.grad_fn(state["params"], micro, normaliser)
                grads, stats = (g, s) if grads is None else self.accumulate((grads, stats), (g, s))
                if self.serialize:
                    jax.block_until_ready(grads)
            finite = bool(self.finite(stats["loss"], grads))
            if finite:
                state, applied = self.apply_fn(state, grads)
        tokens = max(float(stats["tokens"]), 1.0)
        if not finite:
            self.skipped_steps += 1
            logging.warning(
                "GRPO update skipped: non-finite loss (%s) or gradient; state unchanged (%d skipped so far)",
                float(stats["loss"]), self.skipped_steps,
            )  # fmt: skip
            applied = {"grad_norm": jnp.nan, "param_norm": jnp.nan, "learning_rate": jnp.nan}
        out = {
            "loss": float(stats["loss"]),
            "grad_norm": float(applied["grad_norm"]),
            "param_norm": float(applied["param_norm"]),
            "learning_rate": float(applied["learning_rate"]),
            "entropy": float(stats["entropy_sum"]) / tokens,
            "clip_fraction": float(stats["clipped_sum"]) / tokens,
            "groups_kept": float(keep.sum()) / self.group_size,
            "response_tokens": total_tokens,
            "skipped_nonfinite": 0.0 if finite else 1.0,
            "micro_batches": float(len(micro_batches)),
            "compiled_shapes": float(len(self.shapes)),
        }
        if "kl_sum" in stats:
            out["kl"] = float(stats["kl_sum"]) / tokens
        if "tis_weight_sum" in stats:
            out["tis_weight"] = float(stats["tis_weight_sum"]) / tokens
        return state, out


def _all_finite(loss: jax.Array, grads: Any) -> jax.Array:
    """One device scalar: loss finite and the global gradient norm finite (a NaN or inf anywhere makes it not)."""
    return jnp.isfinite(loss) & jnp.isfinite(optax.global_norm(grads))
