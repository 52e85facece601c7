"""The LM head over a sequence in chunks: per-token results of the logits without holding all the logits.

Why: the logits are the largest activation of a training step. One 8,192-token SFT row of a 152k-token vocabulary
is 4.6 GiB in float32, and one GRPO micro-batch's response window at the released lengths is 100 GB. Here the
sequence is cut into chunks of `chunk` tokens and each chunk's head matmul and per-token reduction (cross entropy,
log-prob, entropy) runs under `jax.checkpoint` inside a `lax.map`, so forward and backward hold one chunk's
logits at a time; the backward pass recomputes them. SFT's loss and GRPO's log-probs both go through here.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from vinci_jax import sharding

# per-chunk reduction: (logits [B, C, V], *per-token inputs [B, C]) -> per-token outputs, each [B, C]
PerToken = Callable[..., tuple[jax.Array, ...]]


def chunked_head(
    head: Callable[[jax.Array], jax.Array],
    hidden: jax.Array,
    per_token: PerToken,
    inputs: tuple[jax.Array, ...],
    chunk: int = 0,
) -> tuple[jax.Array, ...]:
    """`per_token(head(hidden), *inputs)` over hidden states [B, L, D], `chunk` tokens at a time (0 or >= L: at once).

    `inputs` are per-token arrays [B, L] (e.g. targets); the outputs are per-token [B, L]. The sequence is padded to a
    multiple of `chunk` (pad positions see zero hidden states and are cut off again), so any length works.
    """
    b, length, _ = hidden.shape
    if chunk <= 0 or length <= chunk:
        return tuple(per_token(head(hidden), *inputs))
    pad = -length % chunk
    count = (length + pad) // chunk

    def split(x: jax.Array) -> jax.Array:  # [B, L, ...] -> [count, B, chunk, ...]
        x = jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2))
        return x.reshape(b, count, chunk, *x.shape[2:]).swapaxes(0, 1)

    # keep the rows on the batch axes inside the loop (no gather of the sequence per chunk)
    hidden_chunks = sharding.constrain(split(hidden), (None, "batch", None, "act_embed"))

    @jax.checkpoint
    def one(hidden_chunk: jax.Array, *chunk_inputs: jax.Array) -> tuple[jax.Array, ...]:
        return tuple(per_token(head(hidden_chunk), *chunk_inputs))

    outs = jax.lax.map(lambda xs: one(*xs), (hidden_chunks, *map(split, inputs)))
    return tuple(o.swapaxes(0, 1).reshape(b, count * chunk, *o.shape[3:])[:, :length] for o in outs)


def token_cross_entropy(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array]:
    """Per-token cross entropy [B, L] of integer targets, in float32 (SFT's loss before weighting)."""
    return (optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets),)


def target_logprobs(logits: jax.Array, targets: jax.Array, temperature: float) -> tuple[jax.Array, jax.Array]:
    """(log p(target) [B, L], entropy [B, L]) of the temperature-scaled distribution, in float32 (GRPO's, and the
    sampler's, log-prob convention)."""
    logp_all = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)
    logp = jnp.take_along_axis(logp_all, targets[..., None], axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.exp(logp_all) * logp_all, axis=-1)
    return logp, entropy
