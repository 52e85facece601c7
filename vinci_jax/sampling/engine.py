"""Rollout engine: continuous batching over a paged KV cache, prompt pages shared by a prompt's samples, rows
handed out the moment they finish.

Why: rollout lengths are long-tailed. The lockstep sampler (`sampler.py`) decodes every row until the longest one
ends and keeps a max-length cache per row; here a fixed number of decode slots is refilled as rows finish, the
cache is a pool of P-token pages (each slot reads only its own pages, through a page table), and a finished row is
yielded at once so the renderers can start on it while the others decode.

How (the device sees only static shapes: slot buckets, page-table width buckets, a fixed burst length):
- prompts are prefilled on demand: when the scheduler is about to admit the first sample of a prompt that is not
  resident, that prompt and the next ones in line (up to `prefill_prompts`, as many as the free pages allow) are
  prefilled in one call (`prefill_pages`: group rows bucketed to a power of two, columns to the group's length
  bucket, only the group's images through the vision tower) whose keys/values go straight into pool pages; the
  group's dense cache lives only inside that call, the first-token logits are kept per prompt. Decode bursts run
  between prefill calls, so new prompts enter while others decode. A resident prompt's full pages are shared by
  all its samples (reference-counted); its last, partial page is kept as a template that each sample copies into a
  page of its own at admission, so one sample's writes never reach another's (copy-on-write). A prompt's pages go
  back when its last sample finishes, or earlier when the pool needs them while none of its samples runs (it is
  then prefilled again when one is admitted);
- the host loop admits pending (prompt, sample) rows into free slots, makes sure every running row has pages for
  the next `steps_per_sync` tokens, then runs that many decode steps on device (`lax.while_loop`, early exit when
  all rows are done) over the active slots only, compacted to a power-of-two bucket;
- when the pool runs out, idle prompts' pages go first, then the youngest running row is preempted: its pages go
  back and it is recomputed from scratch later. Row r at its step i samples with `fold_in(row_keys[r], i)`,
  exactly as the lockstep sampler, so the recomputed row, and every row, equals the lockstep sampler's output with
  the same keys (a row's prefill does not depend on which prompts share its group: same tokens, positions, image
  layout; rounding aside).
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

from vinci_jax.models.layers import set_scan_layers
from vinci_jax.models.paged import PagedKV, decode_step, empty_pages
from vinci_jax.multihost import to_host
from vinci_jax.sampling.decode_policy import decode_copy, resolve_decode_dtype
from vinci_jax.sampling.pages import SINK_PAGE, PageAllocator, pages_for_budget, pages_for_tokens
from vinci_jax.sampling.prompts import PromptBatch, prompt_group
from vinci_jax.sampling.sampler import SampleOutput, Sampler, SamplingParams, _host_value, _sample_row

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
    prefill_prompts: int = 4  # prompts prefilled per call, on demand (the group's rows: a power of two up to this)

    def __post_init__(self) -> None:
        if min(self.slots, self.page_size, self.steps_per_sync, self.buckets_per_octave, self.prefill_prompts) < 1:
            raise ValueError(f"slots, page_size, steps_per_sync, buckets_per_octave, prefill_prompts must be >= 1: "
                             f"{self}")  # fmt: skip
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
    """What a run cost: decode slots computed vs. tokens that belong to a response, prefill calls and the prompts
    they prefilled (a prompt evicted and prefilled again counts twice), preemptions, peak pages; `calls` is the
    order of the device calls, "P" a prefill and "B" a burst (how prefills interleave with decoding)."""

    useful_tokens: int = 0
    computed_slots: int = 0
    bursts: int = 0
    prefills: int = 0
    prefilled_prompts: int = 0
    evictions: int = 0
    preemptions: int = 0
    peak_pages: int = 0
    pages_in_use_after: int = 0
    calls: str = ""

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


def prefill_pages(
    graphdef, state, pages, prefill_logits, input_ids, attention_mask, position_ids, vision_inputs, starts,
    logit_rows, page_ids,
):  # fmt: skip
    """Prefill a group of G left-padded prompts [G, L] and write their keys/values into the pool: row i's tokens
    from column starts[i] on fill pages page_ids[i] ([G, W], W * P >= L; SINK_PAGE where nothing is wanted: past
    the prompt, or a padding row), its last-position logits go to prefill_logits[logit_rows[i]] (an index past the
    end: not wanted). The group's dense cache exists only inside this call. Returns (pages, prefill_logits)."""
    model = nnx.merge(graphdef, state)
    # the decoder's layer loop, not its scan: the scan's stacked weights and stacked keys/values were 26 of this
    # call's 34 GiB of temporaries a chip (Qwen3-VL-8B, v5p-64); the loop costs compile time only (91 s, not 43)
    set_scan_layers(model.model, False)
    g, length = input_ids.shape
    cache = model.init_cache(g, length, pages.k[0].dtype)
    logits, cache = model.forward_with_cache(
        input_ids, position_ids, cache, attention_mask, vision_inputs=vision_inputs, fresh=True, last_only=True
    )
    prefill_logits = prefill_logits.at[logit_rows].set(logits[:, -1].astype(prefill_logits.dtype), mode="drop")
    kv, _, size, d = pages.k[0].shape
    width = page_ids.shape[1]
    # a page slot past a prompt's last token reads a clamped column: never valid (decode overwrites it first)
    columns = jnp.minimum(starts[:, None] + jnp.arange(width * size)[None], length - 1)
    targets = page_ids.reshape(-1)

    def one(pool: jax.Array, dense: jax.Array) -> jax.Array:
        chunk = jnp.take_along_axis(dense, columns[:, :, None, None], axis=1)  # [G, W * P, KV, D]
        chunk = chunk.reshape(g * width, size, kv, d).transpose(2, 0, 1, 3)
        return pool.at[:, targets].set(chunk.astype(pool.dtype))

    return PagedKV(k=tuple(map(one, pages.k, cache.k)), v=tuple(map(one, pages.v, cache.v))), prefill_logits


PREFILL_STATIC = ("graphdef",)
# the engine's prefill of one group into pages (the pool and the prompts' logits updated in place)
_prefill_pages = jax.jit(prefill_pages, static_argnames=PREFILL_STATIC, donate_argnames=("pages", "prefill_logits"))


@functools.partial(jax.jit, donate_argnames=("pages",))
def _copy_page(pages: PagedKV, source: jax.Array, target: jax.Array) -> PagedKV:
    """Page `target` <- page `source` in every layer (a sample's own copy of its prompt's partial page)."""
    copy = lambda pool: pool.at[:, target].set(pool[:, source])  # noqa: E731
    return PagedKV(k=tuple(map(copy, pages.k)), v=tuple(map(copy, pages.v)))


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
        self.size, self.burst_len, self.group = cfg.page_size, cfg.steps_per_sync, cfg.prefill_prompts
        self.model_config = model.config
        text = model.config.text
        dtype = model.dtype
        num_pages = cfg.num_pages or pages_for_budget(text, cfg.page_size, dtype, cfg.memory_budget_mb)
        self.lens = np.asarray(batch.prompt_lengths, np.int64)
        self.width = pages_for_tokens(int(self.lens.max()) + params.max_new_tokens, self.size)  # page-table width
        need = self.width + 2  # one row's whole table, the sink and its prompt's partial-page template
        if num_pages < need:
            raise ValueError(f"a pool of {num_pages} pages cannot hold one row ({need} pages needed): raise the "
                             "engine's num_pages / memory_budget_mb or lower max_new_tokens")  # fmt: skip
        self.prompt_pages = pages_for_tokens(int(self.lens.max()), self.size)
        rows = batch.batch_size * params.n
        if not cfg.num_pages:  # a budget buys at most what the run can hold at once: every slot's whole table and
            # a prefill group's prompts waiting for their samples
            num_pages = min(num_pages, min(cfg.slots, rows) * self.width + self.group * (self.prompt_pages + 1) + 2)
        self.alloc = PageAllocator(num_pages)
        self.stats = EngineStats()
        self.graphdef, self.state = nnx.split(model)
        self.pages = empty_pages(text, num_pages, self.size, dtype)
        vocab = int(text.vocab_size)
        self.prefill_logits = jnp.zeros((batch.batch_size, vocab), jnp.float32)  # per prompt, once prefilled
        self.has_logits = np.zeros(batch.batch_size, bool)
        self.slot_logits = jnp.zeros((cfg.slots + 1, vocab), jnp.float32)
        self.next_positions = np.asarray(batch.next_positions, np.int64)
        self.slots: list[_Slot | None] = [None] * cfg.slots
        self.order: list[int] = []  # running slots, oldest admission first
        self.pending = collections.deque(range(rows))
        self.rows = rows
        self.limits = np.full(rows, params.max_new_tokens, np.int64)
        if row_limits is not None:
            self.limits = np.minimum(self.limits, np.asarray(row_limits, np.int64))
        self.shared: dict[int, list[int]] = {}  # resident prompt -> its full pages
        self.template: dict[int, int] = {}  # resident prompt -> the page holding its partial last page
        self.readers: collections.Counter[int] = collections.Counter()  # prompt -> running samples reading them
        self.unfinished = collections.Counter({p: params.n for p in range(batch.batch_size)})

    # -- page bookkeeping --
    def _prompt_cost(self, prompt: int) -> int:
        """Pool pages a resident prompt holds: its full pages and the partial-page template."""
        return pages_for_tokens(int(self.lens[prompt]), self.size)

    def _admit_cost(self, prompt: int) -> int:
        """Pages a sample of a resident prompt must find free to enter: its partial-page copy and the pages of its
        first burst."""
        return self._pages_needed(prompt, 0) - int(self.lens[prompt]) // self.size

    def _make_room(self, count: int, keep: int) -> bool:
        """Free pages until `count` are available by dropping idle resident prompts (no running sample; `keep`
        excepted), the furthest in line first; False (nothing dropped) when they would not free enough."""
        if self.alloc.available >= count:
            return True
        idle = [p for p in self.shared if self.readers[p] == 0 and p != keep]
        if self.alloc.available + sum(self._prompt_cost(p) for p in idle) < count:
            return False
        line = {}
        for row in self.pending:
            line.setdefault(row // self.params.n, len(line))
        idle.sort(key=lambda p: line.get(p, -1))
        while self.alloc.available < count:
            self._drop_prompt(idle.pop())
            self.stats.evictions += 1
        return True

    def _drop_prompt(self, prompt: int) -> None:
        self.alloc.give(self.shared.pop(prompt) + ([self.template.pop(prompt)] if prompt in self.template else []))

    def _prefill(self, prompt: int) -> bool:
        """Make `prompt` resident, prefilling it with the next non-resident prompts in line (up to
        `prefill_prompts`, while free pages remain for them and for the first sample of `prompt`)."""
        reserve = self._admit_cost(prompt)
        if not self._make_room(self._prompt_cost(prompt) + reserve, keep=prompt):
            return False
        group, cost = [prompt], self._prompt_cost(prompt)
        for row in self.pending:
            other = row // self.params.n
            if len(group) == self.group:
                break
            if other in self.shared or other in group:
                continue
            if self.alloc.available - cost - reserve < self._prompt_cost(other):
                break
            group.append(other)
            cost += self._prompt_cost(other)
        rows = _pow2_at_least(len(group), self.group)
        part = prompt_group(self.batch, group, rows, self.model_config)
        columns = part.input_ids.shape[1]
        table = np.full((rows, pages_for_tokens(columns, self.size)), SINK_PAGE, np.int32)
        starts = np.zeros(rows, np.int32)
        logit_rows = np.full(rows, self.batch.batch_size, np.int32)  # past the end: not written
        for i, p in enumerate(group):
            length = int(self.lens[p])
            full, partial = divmod(length, self.size)
            taken = self.alloc.take(self._prompt_cost(p))
            self.shared[p] = taken[:full]
            if partial:
                self.template[p] = taken[full]
            table[i, : len(taken)] = taken
            starts[i] = columns - length
            if not self.has_logits[p]:  # a prompt prefilled again keeps its first logits: its rows recompute
                logit_rows[i], self.has_logits[p] = p, True
        self.pages, self.prefill_logits = _prefill_pages(
            self.graphdef, self.state, self.pages, self.prefill_logits, _host_value(part.input_ids),
            _host_value(part.attention_mask), _host_value(part.position_ids), part.vision_inputs,
            _host_value(starts), _host_value(logit_rows), _host_value(table),
        )  # fmt: skip
        self.stats.prefills += 1
        self.stats.prefilled_prompts += len(group)
        self.stats.calls += "P"
        return True

    def _admit(self, row: int, slot: int) -> bool:
        prompt = row // self.params.n
        if prompt not in self.shared and not self._prefill(prompt):
            return False
        if not self._make_room(self._admit_cost(prompt), keep=prompt):
            return False
        own = []
        if prompt in self.template:  # copy-on-write of the partial page, done now
            own = self.alloc.take(1)
            self.pages = _copy_page(self.pages, jnp.int32(self.template[prompt]), jnp.int32(own[0]))
        self.readers[prompt] += 1
        self.slots[slot] = _Slot(row, prompt, list(self.shared[prompt]) + own, len(own))
        self.order.append(slot)
        return True

    def _pages_needed(self, prompt: int, done: int) -> int:
        """Pages a row needs for the next burst: cache positions up to prompt + done + burst - 1, never past the
        last one it can write (prompt + max_new - 2)."""
        length = int(self.lens[prompt])
        top = min(length + done + self.burst_len, length + self.params.max_new_tokens - 1)
        return pages_for_tokens(max(top, 1), self.size)

    def _release(self, slot: int, finished: bool) -> None:
        s = self.slots[slot]
        self.alloc.give(s.pages[len(s.pages) - s.own :] if s.own else [])
        self.readers[s.prompt] -= 1
        if finished:
            self.unfinished[s.prompt] -= 1
            if self.unfinished[s.prompt] == 0:  # its last sample: the prompt's pages go back
                self._drop_prompt(s.prompt)
        self.slots[slot] = None
        self.order.remove(slot)

    def _preempt(self, slot: int) -> None:
        row = self.slots[slot].row
        self.stats.useful_tokens -= len(self.slots[slot].tokens)  # they are recomputed
        self._release(slot, finished=False)
        self.pending.appendleft(row)
        self.stats.preemptions += 1

    def _schedule(self) -> None:
        for slot in range(len(self.slots)):
            if self.slots[slot] is None and self.pending:
                if not self._admit(self.pending[0], slot):
                    break
                self.pending.popleft()
        for slot in list(self.order):  # oldest first, so preemption takes the youngest
            s = self.slots[slot]
            if s is None:
                continue
            missing = self._pages_needed(s.prompt, len(s.tokens)) - len(s.pages)
            while missing > 0:
                got = self.alloc.take(missing) if self._make_room(missing, keep=-1) else None
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
            self.stats.calls += "B"
            self.stats.computed_slots += b * int(ran)
            for i, slot in enumerate(running):
                s = self.slots[slot]
                new = int(done_steps[i]) - len(s.tokens)
                s.tokens.extend(int(t) for t in tokens[i, :new])
                s.logprobs.extend(float(x) for x in logprobs[i, :new])
                s.fresh = False
                self.stats.useful_tokens += new
                if finished[i] or len(s.tokens) >= self.limits[s.row]:
                    self._release(slot, finished=True)
                    yield FinishedRow(s.row, s.prompt, np.asarray(s.tokens, np.int32),
                                      np.asarray(s.logprobs, np.float32), bool(finished[i]))  # fmt: skip
        self.stats.pages_in_use_after = self.alloc.in_use
