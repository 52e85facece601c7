"""KV-cache generation for Qwen-VL: one jitted prefill per prompt batch, a `lax.while_loop` decode on device.

Group sampling: the prompts are prefilled once; their caches, last logits and positions are then repeated n times
on device (row r of the output belongs to prompt r // n), so n continuations cost one prefill, not n.

Randomness is per output row: row r at step i samples with `fold_in(row_keys[r], i)`. A row's tokens therefore do
not depend on which other rows share its batch, which is what makes shared-prefill sampling equal to n independent
samplings with the same keys.

Log-probabilities are those of the temperature-scaled distribution `log_softmax(logits / T)` at the sampled token
(before top-k / top-p truncation; equal to the truncated distribution's when top_p = 1 and top_k = 0, the released
ViRL setting); with greedy decoding T is 1. This is the quantity the GRPO ratio uses.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vinci_jax.multihost import to_host
from vinci_jax.sampling.prompts import PromptBatch


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How to sample: n continuations per prompt, up to max_new_tokens each."""

    n: int = 1
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    greedy: bool = False

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_new_tokens < 1:
            raise ValueError(f"n and max_new_tokens must be >= 1, got {self.n}, {self.max_new_tokens}")
        if not self.greedy and self.temperature <= 0:
            raise ValueError("temperature must be > 0 (use greedy=True for argmax decoding)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclasses.dataclass(frozen=True)
class SampleOutput:
    """tokens/logprobs [B*n, max_new] (pad / 0 after a row stops); lengths [B*n] include the stop token."""

    tokens: np.ndarray
    logprobs: np.ndarray
    lengths: np.ndarray
    finished: np.ndarray  # row ended on a stop token (not on max_new_tokens)
    prompt_index: np.ndarray  # output row -> prompt row

    def response_ids(self, row: int) -> np.ndarray:
        return self.tokens[row, : self.lengths[row]]


def _truncate(logits: jax.Array, top_k: int, top_p: float, use_top_p: bool) -> jax.Array:
    """Mask logits outside the top-k and outside the smallest set whose probability reaches top_p."""
    if top_k > 0:
        kth = jax.lax.top_k(logits, top_k)[0][-1]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if use_top_p:
        order = jnp.argsort(-logits)
        sorted_logits = logits[order]
        probs = jax.nn.softmax(sorted_logits)
        before = jnp.cumsum(probs) - probs  # mass strictly above each token
        keep_sorted = before < top_p
        keep = jnp.zeros_like(keep_sorted).at[order].set(keep_sorted)
        logits = jnp.where(keep, logits, -jnp.inf)
    return logits


def _sample_row(
    logits: jax.Array, key: jax.Array, temperature: jax.Array, top_p: jax.Array, *, greedy: bool, top_k: int,
    use_top_p: bool,
) -> tuple[jax.Array, jax.Array]:  # fmt: skip
    if greedy:
        token = jnp.argmax(logits)
        return token, jax.nn.log_softmax(logits)[token]
    scaled = logits / temperature
    token = draw_token(key, _truncate(scaled, top_k, top_p, use_top_p))
    return token, jax.nn.log_softmax(scaled)[token]


def draw_token(key: jax.Array, logits: jax.Array) -> jax.Array:
    """One draw from softmax(logits) as an exponential race: argmax_i p_i / E_i with E_i ~ Exp(1) iid.

    Why not `jax.random.categorical` (Gumbel-max, argmax_i logit_i - log(-log u_i)): the same race in log space,
    but its two nested logs per vocabulary entry made it the cost of a decode step on CPU (32 rows x 32,000
    entries: 91 ms against 38 ms for this and 27 ms for the LM head, at load 12). The winner of the race is token i
    with probability p_i, and like Gumbel-max (unlike inverse-CDF sampling, whose one cumulative sum collects every
    entry's rounding) a tiny change in the logits flips the draw only when the two best scores almost tie, so paths
    that compute the same logits with different rounding (the engine, a recomputed row) keep drawing the same
    tokens. A masked (-inf) entry has p_i = 0 and never wins.
    """
    tiny = jnp.finfo(logits.dtype).tiny  # u > 0, so every E_i is finite and positive
    waits = -jnp.log(jax.random.uniform(key, logits.shape, logits.dtype, minval=tiny))
    return jnp.argmax(jnp.exp(logits - jnp.max(logits)) / waits)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_len"))
def _prefill(graphdef, state, input_ids, attention_mask, position_ids, vision_inputs, max_len):
    model = nnx.merge(graphdef, state)
    cache = model.init_cache(input_ids.shape[0], max_len)
    logits, cache = model.forward_with_cache(
        input_ids, position_ids, cache, attention_mask, vision_inputs=vision_inputs, fresh=True, last_only=True
    )
    return logits[:, -1].astype(jnp.float32), cache


# The prompt cache is not donated: with n > 1 it is repeated into new, larger buffers, and the loop's cache lives
# inside the program (XLA updates it in place across iterations), so there is no output it could alias.
@functools.partial(jax.jit, static_argnames=("graphdef", "n", "max_new", "greedy", "top_k", "use_top_p"))
def _decode(
    graphdef, state, cache, last_logits, next_positions, row_keys, temperature, top_p, stop_ids, pad_id, limits,
    *, n, max_new, greedy, top_k, use_top_p,
):  # fmt: skip
    model = nnx.merge(graphdef, state)
    if n > 1:
        repeat = functools.partial(jnp.repeat, repeats=n, axis=0)
        cache = jax.tree.map(repeat, cache)
        last_logits, next_positions = repeat(last_logits), repeat(next_positions)
    rows = last_logits.shape[0]
    sample = jax.vmap(
        functools.partial(_sample_row, greedy=greedy, top_k=top_k, use_top_p=use_top_p), in_axes=(0, 0, None, None)
    )

    def cond(carry):
        step, done = carry[0], carry[3]
        return (step < max_new) & ~jnp.all(done)

    def body(carry):
        step, tokens, logprobs, done, lengths, cache, logits, positions = carry
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(row_keys, step)
        token, logprob = sample(logits, keys, temperature, top_p)
        active = ~done
        token = jnp.where(active, token, pad_id).astype(jnp.int32)
        tokens = tokens.at[:, step].set(token)
        logprobs = logprobs.at[:, step].set(jnp.where(active, logprob, 0.0))
        lengths = lengths + active.astype(jnp.int32)
        done = done | (active & jnp.isin(token, stop_ids))
        ended = done | (lengths >= limits)  # a per-row limit below max_new (benchmarks) ends a row unfinished
        position_ids = jnp.broadcast_to(positions[None, :, None], (3, rows, 1))
        logits, cache = model.forward_with_cache(token[:, None], position_ids, cache, active[:, None])
        return step + 1, tokens, logprobs, ended, lengths, cache, logits[:, 0].astype(jnp.float32), positions + active

    init = (
        jnp.int32(0),
        jnp.full((rows, max_new), pad_id, jnp.int32),
        jnp.zeros((rows, max_new), jnp.float32),
        jnp.zeros((rows,), jnp.bool_),
        jnp.zeros((rows,), jnp.int32),
        cache,
        last_logits,
        next_positions.astype(jnp.int32),
    )
    _, tokens, logprobs, done, lengths, _, _, _ = jax.lax.while_loop(cond, body, init)
    finished = done & jnp.isin(jnp.take_along_axis(tokens, jnp.maximum(lengths - 1, 0)[:, None], 1)[:, 0], stop_ids)
    return tokens, logprobs, lengths, finished


def _host_value(x: np.ndarray) -> Any:
    """Host inputs of the jitted calls: numpy in a multi-process run (the same global value on every process, which
    jit places itself), a device array otherwise."""
    return np.asarray(x) if jax.process_count() > 1 else jnp.asarray(x)


class Sampler:
    """Samples continuations from the live `model` (its current parameters, in their current sharding)."""

    def __init__(self, model: nnx.Module, stop_token_ids: tuple[int, ...], pad_token_id: int):
        if not stop_token_ids:
            raise ValueError("stop_token_ids must name at least one token (e.g. <|im_end|>)")
        self.model = model
        self.stop_token_ids = tuple(int(t) for t in stop_token_ids)
        self.pad_token_id = int(pad_token_id)

    def prefill(self, batch: PromptBatch, max_new_tokens: int) -> tuple[jax.Array, Any]:
        """Last-position logits [B, vocab] and the cache holding the prompts (sized for max_new_tokens more)."""
        graphdef, state = nnx.split(self.model)
        return _prefill(
            graphdef,
            state,
            _host_value(batch.input_ids),
            _host_value(batch.attention_mask),
            _host_value(batch.position_ids),
            batch.vision_inputs,
            max_len=batch.input_ids.shape[1] + max_new_tokens,
        )

    def generate(self, batch: PromptBatch, params: SamplingParams, key: jax.Array | None = None) -> SampleOutput:
        """n continuations per prompt of `batch`; output row r continues prompt r // n."""
        rows = batch.batch_size * params.n
        if key is None:
            key = jax.random.key(0)
        return self.generate_with_row_keys(batch, params, jax.random.split(key, rows))

    def generate_with_row_keys(
        self, batch: PromptBatch, params: SamplingParams, row_keys: jax.Array, row_limits: np.ndarray | None = None
    ) -> SampleOutput:
        """As `generate`, with the key of every output row given (row r uses row_keys[r]); `row_limits` [B*n]
        optionally ends row r after row_limits[r] <= max_new_tokens tokens (a forced stop, for benchmarks)."""
        rows = batch.batch_size * params.n
        limits = np.full(rows, params.max_new_tokens) if row_limits is None else np.asarray(row_limits)
        if row_keys.shape[0] != rows:
            raise ValueError(f"need {rows} row keys (batch {batch.batch_size} x n {params.n}), got {row_keys.shape[0]}")
        last_logits, cache = self.prefill(batch, params.max_new_tokens)
        graphdef, state = nnx.split(self.model)
        tokens, logprobs, lengths, done = _decode(
            graphdef,
            state,
            cache,
            last_logits,
            _host_value(batch.next_positions),
            row_keys,
            jnp.float32(1.0 if params.greedy else params.temperature),
            jnp.float32(params.top_p),
            jnp.asarray(self.stop_token_ids, jnp.int32),
            jnp.int32(self.pad_token_id),
            jnp.asarray(np.minimum(limits, params.max_new_tokens), jnp.int32),
            n=params.n,
            max_new=params.max_new_tokens,
            greedy=params.greedy,
            top_k=params.top_k,
            use_top_p=params.top_p < 1.0,
        )
        return SampleOutput(  # every process gets all rows (multi-host: gathered from the other processes)
            tokens=to_host(tokens),
            logprobs=to_host(logprobs),
            lengths=to_host(lengths),
            finished=to_host(done),
            prompt_index=np.repeat(np.arange(batch.batch_size), params.n),
        )
