"""Rollout engine: continuous batching over a paged KV cache, prompt pages shared by a prompt's samples, rows
handed out the moment they finish.

Why: rollout lengths are long-tailed. The lockstep sampler (`sampler.py`) decodes every row until the longest one
ends and keeps a max-length cache per row; here a fixed number of decode slots is refilled as rows finish, the
cache is a pool of P-token pages (each slot reads only its own pages, through a page table), and a finished row is
yielded at once so the renderers can start on it while the others decode.

How (the device sees only static shapes: slot buckets, page-table width buckets, a fixed burst length):
- the prompts of a batch are prefilled once, by the sampler's own prefill (so first-token logits and prompt keys
  are the lockstep sampler's); a prompt's keys/values are copied into pages when its first sample enters a slot.
  Its full pages are shared by all its samples (reference-counted); the last, partial page is copied per sample,
  so one sample's writes never reach another's (copy-on-write, done at admission);
- the host loop admits pending (prompt, sample) rows into free slots, makes sure every running row has pages for
  the next `steps_per_sync` tokens, then runs that many decode steps on device (`lax.while_loop`, early exit when
  all rows are done) over the active slots only, compacted to a power-of-two bucket;
- when the pool runs out, the youngest running row is preempted: its pages go back and it is recomputed from
  scratch later. Row r at its step i samples with `fold_in(row_keys[r], i)`, exactly as the lockstep sampler, so
  the recomputed row, and every row, equals the lockstep sampler's output with the same keys.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vinci_jax.models.paged import PagedKV, decode_step, empty_pages
from vinci_jax.multihost import to_host
from vinci_jax.sampling.decode_policy import decode_copy, resolve_decode_dtype
from vinci_jax.sampling.pages import SINK_PAGE, PageAllocator, pages_for_budget, pages_for_tokens
from vinci_jax.sampling.prompts import PromptBatch
from vinci_jax.sampling.sampler import (
    SampleOutput,
    Sampler,
    SamplingParams,
    _host_value,
    _prefill,
    _sample_row,
)

ENGINES = ("paged", "lockstep")  # config.rollout.engine


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """Decode slots, page size, pool size (pages, or a memory budget in MiB when num_pages is 0), burst length, and
    the dtype of the policy copy that decodes (`decode_policy`: auto = bfloat16 on accelerators, float32 on CPU)."""

    slots: int = 32
    page_size: int = 16
    num_pages: int = 0
    memory_budget_mb: float = 512.0
    steps_per_sync: int = 8
    decode_dtype: str = "auto"
    buckets_per_octave: int = 4  # slot buckets per doubling of active rows (more: less padding, more compiles)

    def __post_init__(self) -> None:
        if self.slots < 1 or self.page_size < 1 or self.steps_per_sync < 1 or self.buckets_per_octave < 1:
            raise ValueError(f"slots, page_size, steps_per_sync and buckets_per_octave must be >= 1: {self}")
        resolve_decode_dtype(self.decode_dtype)


@dataclasses.dataclass(frozen=True)
class FinishedRow:
    """One finished rollout: output row `row` (continuing prompt `prompt`), its tokens and log-probs."""

    row: int
    prompt: int
    tokens: np.ndarray
    logprobs: np.ndarray
    finished: bool  # ended on a stop token (not on max_new_tokens)


@dataclasses.dataclass
class EngineStats:
    """What a run cost: decode slots computed vs. tokens that belong to a response, preemptions, peak pages."""

    useful_tokens: int = 0
    computed_slots: int = 0
    bursts: int = 0
    preemptions: int = 0
    peak_pages: int = 0
    pages_in_use_after: int = 0

    @property
    def slot_utilisation(self) -> float:
        return self.useful_tokens / max(1, self.computed_slots)


def _pow2_at_least(x: int, cap: int) -> int:
    size = 1
    while size < x:
        size *= 2
    return min(size, cap)


def _slot_bucket(active: int, slots: int, per_octave: int = 4) -> int:
    """Rows a burst computes for `active` running rows: `per_octave` sizes per doubling (4: 1..8, 10, 12, 14, 16,
    20, 24, ...), so padding wastes under 1 / per_octave of a burst's slots and the engine compiles a bounded set of
    step shapes (`per_octave` per doubling of `slots`; 1 is powers of two, the fewest compiles)."""
    active = max(active, 1)
    step = max(1, _pow2_at_least(active, 1 << 62) // (2 * per_octave))
    return min(slots, -(-active // step) * step)


def _smaller_bucket(bucket: int, slots: int, per_octave: int = 4) -> int:
    """The largest active count that a smaller bucket than `bucket` holds (0 for the smallest)."""
    below = bucket - 1
    while below > 0 and _slot_bucket(below, slots, per_octave) == bucket:
        below -= 1
    return below


@functools.partial(jax.jit, donate_argnames=("pages",))
def _load_prompt(pages: PagedKV, dense_k, dense_v, row, start, page_ids) -> PagedKV:
    """Copy len(page_ids) * P prompt tokens of prefill row `row` from column `start` into pages `page_ids`
    (entries that are SINK_PAGE are not wanted: a shared page already resident, or past the prompt)."""
    kv, _, size, d = pages.k[0].shape
    width = page_ids.shape[0] * size

    def one(pool: jax.Array, dense: jax.Array) -> jax.Array:
        chunk = jax.lax.dynamic_slice(dense, (row, start, 0, 0), (1, width, kv, d))[0]
        chunk = chunk.reshape(page_ids.shape[0], size, kv, d).transpose(2, 0, 1, 3)
        return pool.at[:, page_ids].set(chunk.astype(pool.dtype))

    return PagedKV(k=tuple(map(one, pages.k, dense_k)), v=tuple(map(one, pages.v, dense_v)))


def decode_burst(
    graphdef, state, pages, slot_logits, prefill_logits, slot_ids, fresh, prompt, page_table, lengths, positions,
    done_steps, limit, active, row_ids, row_keys, temperature, top_p, stop_ids, pad_id, exit_at,
    *, steps, greedy, top_k, use_top_p,
):  # fmt: skip
    """Up to `steps` decode steps for the slots `slot_ids` (one bucket); the lockstep sampler's loop body per row.
    The burst ends early once no more than `exit_at` rows are still running: the host then admits pending rows
    into the freed slots, or moves the rest to a smaller bucket, instead of computing finished rows' slots."""
    model = nnx.merge(graphdef, state)
    rows = slot_ids.shape[0]
    logits = jnp.where(fresh[:, None], prefill_logits[prompt], slot_logits[slot_ids])
    sample = jax.vmap(
        functools.partial(_sample_row, greedy=greedy, top_k=top_k, use_top_p=use_top_p), in_axes=(0, 0, None, None)
    )
    keys_of_rows = row_keys[row_ids]

    def cond(carry):
        return (carry[0] < steps) & (jnp.sum(carry[4]) > exit_at)

    def body(carry):
        j, pages, logits, tokens_out, active, logprobs_out, done_steps, lengths, positions, finished = carry
        keys = jax.vmap(jax.random.fold_in)(keys_of_rows, done_steps)
        token, logprob = sample(logits, keys, temperature, top_p)
        token = jnp.where(active, token, pad_id).astype(jnp.int32)
        tokens_out = tokens_out.at[:, j].set(token)
        logprobs_out = logprobs_out.at[:, j].set(jnp.where(active, logprob, 0.0))
        done_steps = done_steps + active
        stopped = active & jnp.isin(token, stop_ids)
        go_on = active & ~stopped & (done_steps < limit)
        new_logits, pages = decode_step(model, token, positions, pages, page_table, lengths, go_on)
        logits = jnp.where(go_on[:, None], new_logits, logits)
        step = go_on.astype(jnp.int32)
        return (j + 1, pages, logits, tokens_out, go_on, logprobs_out, done_steps, lengths + step, positions + step,
                finished | stopped)  # fmt: skip

    init = (
        jnp.int32(0), pages, logits, jnp.full((rows, steps), pad_id, jnp.int32), active,
        jnp.zeros((rows, steps), jnp.float32), done_steps, lengths, positions, jnp.zeros((rows,), jnp.bool_),
    )  # fmt: skip
    ran, pages, logits, tokens, _, logprobs, done_steps, _, _, finished = jax.lax.while_loop(cond, body, init)
    slot_logits = slot_logits.at[slot_ids].set(logits)
    return pages, slot_logits, tokens, logprobs, done_steps, finished, ran


BURST_STATIC = ("graphdef", "steps", "greedy", "top_k", "use_top_p")
# the engine's decode step: a plain jitted function (pages and the slots' logits updated in place)
_burst = jax.jit(decode_burst, static_argnames=BURST_STATIC, donate_argnames=("pages", "slot_logits"))


@dataclasses.dataclass
class _Slot:
    row: int
    prompt: int
    pages: list[int]  # the row's page table: shared full prompt pages, then its own
    own: int  # how many of `pages` (at the end) belong to this row alone
    fresh: bool = True
    tokens: list[int] = dataclasses.field(default_factory=list)
    logprobs: list[float] = dataclasses.field(default_factory=list)


class Engine:
    """Continuous-batching generation from the live `model`; `generate` returns what `Sampler.generate` does."""

    def __init__(
        self, model: nnx.Module, stop_token_ids: tuple[int, ...], pad_token_id: int, config: EngineConfig | None = None
    ):
        if not stop_token_ids:
            raise ValueError("stop_token_ids must name at least one token (e.g. <|im_end|>)")
        self.model = model
        self.stop_token_ids = tuple(int(t) for t in stop_token_ids)
        self.pad_token_id = int(pad_token_id)
        self.config = config or EngineConfig()
        self.stats = EngineStats()
        self._decoder: tuple[list[jax.Array], nnx.Module] | None = None

    def decoder(self) -> nnx.Module:
        """The policy copy that decodes (`decode_copy` in the configured dtype); made again only when the live
        model's weights changed (other arrays), so an engine kept across training steps never decodes stale ones."""
        weights = jax.tree.leaves(nnx.state(self.model, nnx.Param))
        if self._decoder is None or any(a is not b for a, b in zip(self._decoder[0], weights, strict=True)):
            self._decoder = (weights, decode_copy(self.model, resolve_decode_dtype(self.config.decode_dtype)))
        return self._decoder[1]

    # -- public --
    def generate(self, batch: PromptBatch, params: SamplingParams, key: jax.Array | None = None) -> SampleOutput:
        rows = batch.batch_size * params.n
        key = jax.random.key(0) if key is None else key
        return self.generate_with_row_keys(batch, params, jax.random.split(key, rows))

    def generate_with_row_keys(
        self, batch: PromptBatch, params: SamplingParams, row_keys: jax.Array, row_limits: np.ndarray | None = None
    ) -> SampleOutput:
        rows = list(self.stream(batch, params, row_keys, row_limits))
        return collect_rows(rows, batch.batch_size, params, self.pad_token_id)

    def stream(
        self, batch: PromptBatch, params: SamplingParams, row_keys: jax.Array, row_limits: np.ndarray | None = None
    ) -> Iterator[FinishedRow]:
        """Yield every output row (row r continues prompt r // n) as soon as it is done, in finishing order.
        `row_limits` [B*n] optionally ends row r after row_limits[r] tokens (a forced stop, for benchmarks)."""
        rows = batch.batch_size * params.n
        if row_keys.shape[0] != rows:
            raise ValueError(f"need {rows} row keys (batch {batch.batch_size} x n {params.n}), got {row_keys.shape[0]}")
        run = _Run(self, batch, params, row_keys, row_limits)
        yield from run.loop()
        self.stats = run.stats


def make_generator(
    kind: str, model: nnx.Module, stop_token_ids: tuple[int, ...], pad_token_id: int,
    config: EngineConfig | None = None,
) -> Sampler | Engine:  # fmt: skip
    """`kind` "paged" (this engine) or "lockstep" (the reference sampler); both `generate(batch, params, key)` and
    give the same rows for the same key (the engine splits the key into per-row keys as the sampler does)."""
    if kind not in ENGINES:
        raise ValueError(f"engine={kind!r}; choose one of {ENGINES}")
    if kind == "lockstep":
        return Sampler(model, stop_token_ids, pad_token_id)
    return Engine(model, stop_token_ids, pad_token_id, config)


def collect_rows(rows: list[FinishedRow], prompts: int, params: SamplingParams, pad_id: int) -> SampleOutput:
    """Streamed rows -> the lockstep sampler's output layout (row r continues prompt r // n, padded to max_new)."""
    count = prompts * params.n
    tokens = np.full((count, params.max_new_tokens), pad_id, np.int32)
    logprobs = np.zeros((count, params.max_new_tokens), np.float32)
    lengths = np.zeros(count, np.int32)
    finished = np.zeros(count, bool)
    for out in rows:
        n = len(out.tokens)
        tokens[out.row, :n], logprobs[out.row, :n] = out.tokens, out.logprobs
        lengths[out.row], finished[out.row] = n, out.finished
    if len({out.row for out in rows}) != count:
        raise RuntimeError(f"the engine returned {len(rows)} rows for {count} requested")
    return SampleOutput(tokens, logprobs, lengths, finished, np.repeat(np.arange(prompts), params.n))


class _Run:
    """One `Engine.stream` call: the host-side scheduler state."""

    def __init__(
        self, engine: Engine, batch: PromptBatch, params: SamplingParams, row_keys: jax.Array,
        row_limits: np.ndarray | None = None,
    ):  # fmt: skip
        cfg, model = engine.config, engine.decoder()
        self.engine, self.batch, self.params, self.row_keys = engine, batch, params, row_keys
        self.size, self.burst_len = cfg.page_size, cfg.steps_per_sync
        text = model.config.text
        dtype = model.dtype
        num_pages = cfg.num_pages or pages_for_budget(text, cfg.page_size, dtype, cfg.memory_budget_mb)
        self.lens = np.asarray(batch.prompt_lengths, np.int64)
        self.width = pages_for_tokens(int(self.lens.max()) + params.max_new_tokens, self.size)  # page-table width
        need = self.width + 2  # one row's whole table, the sink and a page of slack for the partial-page copy
        if num_pages < need:
            raise ValueError(f"a pool of {num_pages} pages cannot hold one row ({need} pages needed): raise the "
                             "engine's num_pages / memory_budget_mb or lower max_new_tokens")  # fmt: skip
        if not cfg.num_pages:  # a budget buys at most what the run can hold at once: every slot's whole table
            num_pages = min(num_pages, min(cfg.slots, batch.batch_size * params.n) * self.width + 2)
        self.alloc = PageAllocator(num_pages)
        self.stats = EngineStats()
        self.graphdef, self.state = nnx.split(model)
        length = batch.input_ids.shape[1]
        self.prompt_pages = pages_for_tokens(int(self.lens.max()), self.size)
        # the prompts' dense cache only needs the columns a page-wide slice may read past a prompt's last token
        # (not max_new_tokens more, as the lockstep sampler's): the decode happens in the pages
        self.prefill_logits, cache = _prefill(
            self.graphdef, self.state, _host_value(batch.input_ids), _host_value(batch.attention_mask),
            _host_value(batch.position_ids), batch.vision_inputs, max_len=length + self.prompt_pages * self.size,
        )  # fmt: skip
        self.dense_k, self.dense_v, self.columns = cache.k, cache.v, length
        self.pages = empty_pages(text, num_pages, self.size, cache.k[0].dtype)
        self.slot_logits = jnp.zeros((cfg.slots + 1, self.prefill_logits.shape[1]), jnp.float32)
        self.next_positions = np.asarray(batch.next_positions, np.int64)
        self.slots: list[_Slot | None] = [None] * cfg.slots
        self.order: list[int] = []  # running slots, oldest admission first
        self.pending = collections.deque(range(rows := batch.batch_size * params.n))
        self.rows = rows
        self.limits = np.full(rows, params.max_new_tokens, np.int64)
        if row_limits is not None:
            self.limits = np.minimum(self.limits, np.asarray(row_limits, np.int64))
        self.shared: dict[int, list[int]] = {}  # prompt -> its resident full pages
        self.readers: collections.Counter[int] = collections.Counter()  # prompt -> running samples reading them

    # -- page bookkeeping --
    def _admit(self, row: int, slot: int) -> bool:
        prompt = row // self.params.n
        length = int(self.lens[prompt])
        full, partial = divmod(length, self.size)
        resident = prompt in self.shared
        wanted = (0 if resident else full) + (1 if partial else 0)
        ahead = self._pages_needed(prompt, 0) - full - (1 if partial else 0)
        if self.alloc.available < wanted + max(0, ahead):
            return False
        fresh_pages = self.alloc.take(wanted)
        shared = self.shared[prompt] if resident else fresh_pages[:full]
        own = fresh_pages[len(fresh_pages) - (1 if partial else 0) :] if partial else []
        targets = [SINK_PAGE] * self.prompt_pages
        if not resident:
            targets[:full] = shared
        if partial:
            targets[full] = own[0]
        if any(t != SINK_PAGE for t in targets):
            start = self.columns - length
            self.pages = _load_prompt(self.pages, self.dense_k, self.dense_v, jnp.int32(prompt), jnp.int32(start),
                                      _host_value(np.asarray(targets, np.int32)))  # fmt: skip
        self.shared[prompt] = shared
        self.readers[prompt] += 1
        self.slots[slot] = _Slot(row, prompt, list(shared) + own, len(own))
        self.order.append(slot)
        return True

    def _pages_needed(self, prompt: int, done: int) -> int:
        """Pages a row needs for the next burst: cache positions up to prompt + done + burst - 1, never past the
        last one it can write (prompt + max_new - 2)."""
        length = int(self.lens[prompt])
        top = min(length + done + self.burst_len, length + self.params.max_new_tokens - 1)
        return pages_for_tokens(max(top, 1), self.size)

    def _release(self, slot: int) -> None:
        s = self.slots[slot]
        self.alloc.give(s.pages[len(s.pages) - s.own :] if s.own else [])
        self.readers[s.prompt] -= 1
        if self.readers[s.prompt] == 0:
            self.alloc.give(self.shared.pop(s.prompt))
        self.slots[slot] = None
        self.order.remove(slot)

    def _preempt(self, slot: int) -> None:
        row = self.slots[slot].row
        self.stats.useful_tokens -= len(self.slots[slot].tokens)  # they are recomputed
        self._release(slot)
        self.pending.appendleft(row)
        self.stats.preemptions += 1

    def _schedule(self) -> None:
        for slot in range(len(self.slots)):
            if self.slots[slot] is None and self.pending:
                row = self.pending.popleft()
                if not self._admit(row, slot):
                    self.pending.appendleft(row)
                    break
        for slot in list(self.order):  # oldest first, so preemption takes the youngest
            s = self.slots[slot]
            if s is None:
                continue
            missing = self._pages_needed(s.prompt, len(s.tokens)) - len(s.pages)
            while missing > 0:
                got = self.alloc.take(missing)
                if got is not None:
                    s.pages.extend(got)
                    s.own += len(got)
                    break
                self._preempt(self.order[-1])
                if self.slots[slot] is None:  # it was the youngest itself
                    break
        self.stats.peak_pages = max(self.stats.peak_pages, self.alloc.in_use)

    # -- the loop --
    def loop(self) -> Iterator[FinishedRow]:
        p, engine = self.params, self.engine
        stop_ids = jnp.asarray(engine.stop_token_ids, jnp.int32)
        temperature = jnp.float32(1.0 if p.greedy else p.temperature)
        top_p = jnp.float32(p.top_p)
        pad = jnp.int32(engine.pad_token_id)
        dummy = len(self.slots)
        while self.pending or self.order:
            self._schedule()
            running = list(self.order)
            if not running:
                raise RuntimeError("the rollout engine could not admit any row (page pool too small)")
            octave = self.engine.config.buckets_per_octave
            b = _slot_bucket(len(running), len(self.slots), octave)
            # stop the burst when a row ends if one is waiting for its slot, else when a smaller bucket holds the rest
            exit_at = len(running) - 1 if self.pending else _smaller_bucket(b, len(self.slots), octave)
            width = _pow2_at_least(max(len(self.slots[s].pages) for s in running), self.width)
            table = np.full((b, width), SINK_PAGE, np.int32)
            ids = np.full(b, dummy, np.int32)
            fields = np.zeros((7, b), np.int64)  # fresh, prompt, length, position, done, limit, row
            active = np.zeros(b, bool)
            for i, slot in enumerate(running):
                s = self.slots[slot]
                done = len(s.tokens)
                table[i, : len(s.pages)] = s.pages
                ids[i], active[i] = slot, True
                fields[:, i] = (s.fresh, s.prompt, self.lens[s.prompt] + done, self.next_positions[s.prompt] + done,
                                done, self.limits[s.row], s.row)  # fmt: skip
            f = [_host_value(x) for x in fields.astype(np.int32)]
            self.pages, self.slot_logits, tokens, logprobs, done_steps, finished, ran = _burst(
                self.graphdef, self.state, self.pages, self.slot_logits, self.prefill_logits, _host_value(ids),
                _host_value(fields[0].astype(bool)), f[1], _host_value(table), f[2], f[3], f[4], f[5],
                _host_value(active), f[6], self.row_keys, temperature, top_p, stop_ids, pad, jnp.int32(exit_at),
                steps=self.burst_len, greedy=p.greedy, top_k=p.top_k, use_top_p=p.top_p < 1.0,
            )  # fmt: skip
            tokens, logprobs, done_steps, finished, ran = map(to_host, (tokens, logprobs, done_steps, finished, ran))
            self.stats.bursts += 1
            self.stats.computed_slots += b * int(ran)
            for i, slot in enumerate(running):
                s = self.slots[slot]
                new = int(done_steps[i]) - len(s.tokens)
                s.tokens.extend(int(t) for t in tokens[i, :new])
                s.logprobs.extend(float(x) for x in logprobs[i, :new])
                s.fresh = False
                self.stats.useful_tokens += new
                if finished[i] or len(s.tokens) >= self.limits[s.row]:
                    self._release(slot)
                    yield FinishedRow(s.row, s.prompt, np.asarray(s.tokens, np.int32),
                                      np.asarray(s.logprobs, np.float32), bool(finished[i]))  # fmt: skip
        self.stats.pages_in_use_after = self.alloc.in_use
