"""Stand-ins used by the trainer's tests and by `configs/sft.py:standin`: a tiny text-only NNX language model and a
deterministic in-memory batch iterator.

They exist so the trainer (sharding, accumulation, checkpoint/resume) can be tested without depending on the full
Qwen2.5-VL port or the Grain pipeline. The stand-in model has the same call signature as the real model
(`input_ids`, 3-D `position_ids`, `segment_ids`) and tags parameters with the same logical axis names, so a sharding
bug shows up here too. Neither is used by the real presets.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vinci_jax import sharding
from vinci_jax.models.layers import REMAT_POLICIES


@dataclasses.dataclass(frozen=True)
class StandInConfig:
    vocab_size: int = 64
    hidden_size: int = 32
    intermediate_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    rope_theta: float = 10_000.0

    @classmethod
    def tiny(cls) -> StandInConfig:
        return cls()


def _rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding over the last dim of x [B, L, H, D] with positions [B, L]."""
    half = x.shape[-1] // 2
    freqs = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions[..., None].astype(jnp.float32) * freqs  # [B, L, half]
    cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


class _RMSNorm(nnx.Module):
    def __init__(self, dim: int, param_dtype: Any):
        self.weight = sharding.param(jnp.ones((dim,), param_dtype), "norm")

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + 1e-6)
        return (xf * self.weight[...].astype(jnp.float32)).astype(x.dtype)


class _Block(nnx.Module):
    def __init__(self, cfg: StandInConfig, rngs: nnx.Rngs, dtype: Any, param_dtype: Any):
        d, f, h = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads
        init = nnx.initializers.normal(0.02)
        self.cfg, self.dtype = cfg, dtype
        self.input_norm = _RMSNorm(d, param_dtype)
        self.qkv = sharding.param(init(rngs.params(), (d, 3, h, d // h), param_dtype), "embed", "qkv", "heads", None)
        self.o = sharding.param(init(rngs.params(), (h, d // h, d), param_dtype), "heads", None, "embed")
        self.post_norm = _RMSNorm(d, param_dtype)
        self.up = sharding.param(init(rngs.params(), (d, 2, f), param_dtype), "embed", None, "mlp")
        self.down = sharding.param(init(rngs.params(), (f, d), param_dtype), "mlp", "embed")

    def __call__(self, x: jax.Array, positions: jax.Array, mask: jax.Array) -> jax.Array:
        c = lambda p: p[...].astype(self.dtype)
        y = self.input_norm(x)
        q, k, v = jnp.unstack(jnp.einsum("bld,dthk->tblhk", y, c(self.qkv)), axis=0)
        q, k = _rope(q, positions, self.cfg.rope_theta), _rope(k, positions, self.cfg.rope_theta)
        scores = jnp.einsum("blhk,bmhk->bhlm", q, k).astype(jnp.float32) / np.sqrt(q.shape[-1])
        scores = jnp.where(mask[:, None], scores, -1e30)
        attn = jnp.einsum("bhlm,bmhk->blhk", jax.nn.softmax(scores, axis=-1).astype(self.dtype), v)
        x = x + jnp.einsum("blhk,hkd->bld", attn, c(self.o))
        x = sharding.constrain(x, ("batch", "seq", "act_embed"))
        gate, up = jnp.unstack(jnp.einsum("bld,dtf->tblf", self.post_norm(x), c(self.up)), axis=0)
        x = x + jnp.einsum("blf,fd->bld", jax.nn.silu(gate) * up, c(self.down))
        return sharding.constrain(x, ("batch", "seq", "act_embed"))


class StandInTextLM(nnx.Module):
    """A tiny causal text LM with the real model's call signature (no vision): trainer tests only.

    `remat_policy` is the hook the trainer's `model.remat` option needs from a model: each block's forward is wrapped
    in `nnx.remat` with the named `jax.checkpoint_policies` policy.
    """

    def __init__(
        self,
        config: StandInConfig,
        *,
        rngs: nnx.Rngs,
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
        remat_policy: str = "none",
    ):
        self.config = config
        self.dtype = dtype
        self.remat_policy = remat_policy
        init = nnx.initializers.normal(0.02)
        self.embed_tokens = sharding.param(
            init(rngs.params(), (config.vocab_size, config.hidden_size), param_dtype), "vocab", "embed"
        )
        self.layers = nnx.List([_Block(config, rngs, dtype, param_dtype) for _ in range(config.num_layers)])
        self.norm = _RMSNorm(config.hidden_size, param_dtype)
        self.lm_head = sharding.param(
            init(rngs.params(), (config.hidden_size, config.vocab_size), param_dtype), "embed", "vocab"
        )

    def __call__(
        self,
        input_ids: jax.Array,
        position_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        pixel_values: jax.Array | None = None,
        vision_inputs: Any = None,
    ) -> jax.Array:
        del pixel_values, vision_inputs  # text only
        if segment_ids is None:
            segment_ids = jnp.ones_like(input_ids) if attention_mask is None else attention_mask.astype(jnp.int32)
        length = input_ids.shape[1]
        causal = jnp.tril(jnp.ones((length, length), bool))
        same = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, None, :] > 0)
        mask = causal[None] & same
        x = self.embed_tokens[...].astype(self.dtype)[input_ids]
        x = sharding.constrain(x, ("batch", "seq", "act_embed"))
        positions = position_ids[0]
        for block in self.layers:
            if self.remat_policy == "none":
                x = block(x, positions, mask)
            else:
                policy = REMAT_POLICIES[self.remat_policy]
                x = nnx.remat(lambda b, h, p, m: b(h, p, m), policy=policy)(block, x, positions, mask)
        x = self.norm(x)
        logits = jnp.einsum("bld,dv->blv", x, self.lm_head[...].astype(self.dtype))
        return sharding.constrain(logits, ("batch", "seq", "act_vocab"))


class SyntheticSFTIterator:
    """Deterministic packed SFT-like batches in memory (trainer tests / stand-in preset only).

    Each row packs two samples (segment ids 1 and 2, trailing padding 0); a sample is an arithmetic progression of
    token ids mod the vocabulary, so a model can learn it and the loss falls quickly. The loss mask covers the second
    half of each sample (the "assistant" part). Batches are a pure function of (seed, batch index, global row),
    so `get_state`/`set_state` of the batch index give exact resumption. Each process yields its own slice of the
    global batch (per-host data sharding).
    """

    def __init__(
        self,
        *,
        global_batch_size: int,
        seq_len: int,
        vocab_size: int,
        seed: int = 0,
        process_index: int = 0,
        process_count: int = 1,
    ):
        if global_batch_size % process_count:
            raise ValueError(f"global batch {global_batch_size} does not divide over {process_count} processes")
        self.local_batch_size = global_batch_size // process_count
        self.seq_len, self.vocab_size, self.seed = seq_len, vocab_size, seed
        self.process_index = process_index
        self._index = 0

    def get_state(self) -> dict[str, int]:
        return {"index": self._index}

    def set_state(self, state: dict[str, int]) -> None:
        self._index = int(state["index"])

    def __iter__(self) -> SyntheticSFTIterator:
        return self

    def _row(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        length = self.seq_len
        cut = int(rng.integers(length // 3, 2 * length // 3))
        used = int(rng.integers(length - length // 8, length + 1))
        ids = np.zeros(length, np.int32)
        seg = np.zeros(length, np.int32)
        pos = np.zeros(length, np.int32)
        mask = np.zeros(length, np.float32)
        for sid, (lo, hi) in enumerate(((0, cut), (cut, used)), start=1):
            n = hi - lo
            start, stride = int(rng.integers(self.vocab_size)), int(rng.integers(1, 4))
            ids[lo:hi] = (start + stride * np.arange(n)) % self.vocab_size
            seg[lo:hi] = sid
            pos[lo:hi] = np.arange(n)
            mask[lo + n // 2 : hi] = 1.0
        return {"input_ids": ids, "segment_ids": seg, "positions": pos, "loss_mask": mask}

    def __next__(self) -> dict[str, np.ndarray]:
        rows = []
        for j in range(self.local_batch_size):
            # keyed by the row's global index: the global batch is the same whatever the number of processes
            rng = np.random.default_rng([self.seed, self._index, self.process_index * self.local_batch_size + j])
            rows.append(self._row(rng))
        self._index += 1
        batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
        ids, seg, mask = batch["input_ids"], batch["segment_ids"], batch["loss_mask"]
        # next-token targets: position t predicts token t+1 when t+1 is a masked token of the same sample
        targets = np.zeros_like(ids)
        targets[:, :-1] = ids[:, 1:]
        weights = np.zeros_like(mask)
        weights[:, :-1] = mask[:, 1:] * (seg[:, 1:] == seg[:, :-1])
        return {
            "input_ids": ids,
            "position_ids": np.broadcast_to(batch["positions"][None], (3, *ids.shape)).copy(),
            "segment_ids": seg,
            "targets": targets,
            "loss_mask": weights,
        }
