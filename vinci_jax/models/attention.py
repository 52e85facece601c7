"""One attention entry point for every model: q, k, v and a *description* of the mask, never a dense mask.

`attention(q, k, v, mask, implementation=...)` with q [B, T, H, D], k and v [B, S, KV, D] (H a multiple of KV) and
an `AttentionMask` that says which keys a query may see:

    causal          key position <= query position (positions default to 0..T-1 and 0..S-1)
    segment ids     q_segment_ids [B, T] == kv_segment_ids [B, S] (None: self-attention, the same ids as q):
                    packed samples, padding (id 0 meets only id 0), images of a vision row, window slots
    positions       q_positions [B, T] / kv_positions [B, S]: per-row offsets (a chunk appended to a KV cache)
    window          key position > query position - window (sliding window)
    branch ids      branch_ids [B, L] (self-attention, causal): shared-prefix rows, a prompt once then its
                    responses. Branch 0 is a segment's shared prefix, visible to every later branch of the same
                    segment; a branch b > 0 sees branch 0 and itself only. `branch_slots` (static: the prefix
                    slot's length, then each response slot's) says the branch of a position is its slot's index
                    (a fixed slot layout, padding inside slots as segment 0), so the mask is static per shape and
                    block-sparse kernels take it as a computed block mask (fully masked blocks are skipped).
                    Models take it as their `segment_ids` argument: a `BranchedSegments` (see `for_tokens`).

Padding is a segment of its own (id 0), so no softmax row is ever empty and every implementation computes the
same numbers at every position; callers ignore padded outputs.

Implementations (`--config.model.attention`):

    xla     `jax.nn.dot_product_attention` on the dense [B, T, S] mask built from the description: the reference
            and the CPU default (it materialises [B, H, T, S] scores).
    splash  Pallas TPU splash attention (block-sparse flash attention with segment ids), one kernel per batch row
            (vmap), inside `shard_map` when a mesh is set (batch and heads sharded as the activations are). Off TPU
            it runs in Pallas interpret mode (tests).
    cudnn   GPU flash attention: `jax.nn.dot_product_attention(implementation="cudnn")` for causal / unmasked
            attention, the Pallas GPU (Triton) kernel when segment ids are needed (cuDNN cannot express them).
    auto    splash on TPU, cudnn on GPU, xla elsewhere.

A kernel that cannot express a description (per-row positions: KV-cache chunks; lengths that are not a multiple
of its block; branch ids without a static slot layout, or any branch ids on GPU) falls back to xla for that call;
`plan` says which implementation a call will use.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vinci_jax import sharding

IMPLEMENTATIONS = ("auto", "xla", "splash", "cudnn")
SPLASH_BLOCKS = (512, 256, 128)  # block sizes tried, largest first; a length must be a multiple of one


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BranchedSegments:
    """A shared-prefix row's segment ids with its static slot layout: what a model takes as `segment_ids` for
    shared-prefix rows (its `AttentionMask.for_tokens` turns it into branch ids; see the module docstring)."""

    segment_ids: Any
    slots: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))


def slot_branch_ids(slots: tuple[int, ...], length: int) -> np.ndarray:
    """int32 [length]: the slot index of each position of a fixed slot layout (positions past the slots: one
    more branch, of their own)."""
    bounds = np.cumsum(slots)
    return np.searchsorted(bounds, np.arange(length), side="right").astype(np.int32)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AttentionMask:
    """Which keys each query may attend to, as O(L) arrays (see the module docstring)."""

    q_segment_ids: Any = None
    kv_segment_ids: Any = None
    q_positions: Any = None
    kv_positions: Any = None
    branch_ids: Any = None
    causal: bool = dataclasses.field(default=False, metadata=dict(static=True))
    window: int | None = dataclasses.field(default=None, metadata=dict(static=True))
    branch_slots: tuple[int, ...] | None = dataclasses.field(default=None, metadata=dict(static=True))

    def __post_init__(self):
        if self.q_segment_ids is None and self.kv_segment_ids is not None:
            raise ValueError("AttentionMask has kv_segment_ids without q_segment_ids")
        if (self.q_positions is None) != (self.kv_positions is None):
            raise ValueError("AttentionMask needs both q_positions and kv_positions, or neither")
        if self.has_branches and not (self.causal and self.kv_segment_ids is None and not self.has_positions):
            raise ValueError("branch ids describe causal self-attention rows (no kv_segment_ids, no positions)")

    @classmethod
    def segments(cls, segment_ids: Any, *, causal: bool = False, window: int | None = None) -> AttentionMask:
        """Self-attention within equal ids of `segment_ids` [B, L] (0 = padding)."""
        ids = jnp.asarray(segment_ids).astype(jnp.int32)
        return cls(q_segment_ids=ids, causal=causal, window=window)

    @classmethod
    def shared_prefix(cls, segment_ids: Any, slots: tuple[int, ...]) -> AttentionMask:
        """Causal shared-prefix rows of a fixed slot layout `slots` (prefix slot, then response slots), within
        equal `segment_ids` [B, L] (0 = padding inside the slots)."""
        ids = jnp.asarray(segment_ids).astype(jnp.int32)
        slots = tuple(int(s) for s in slots)
        branches = jnp.broadcast_to(jnp.asarray(slot_branch_ids(slots, ids.shape[1])), ids.shape)
        return cls(q_segment_ids=ids, branch_ids=branches, causal=True, branch_slots=slots)

    @classmethod
    def for_tokens(
        cls, attention_mask: Any = None, segment_ids: Any = None, *, shape: tuple[int, int]
    ) -> AttentionMask:
        """The decoders' mask: causal, within packed samples (`segment_ids`, 0 = padding; a `BranchedSegments`
        for shared-prefix rows) or within a row's real tokens (`attention_mask`, 1 = real; left or right padding),
        or plain causal when neither is given."""
        if segment_ids is not None and attention_mask is not None:
            raise ValueError("pass attention_mask or segment_ids, not both")
        if isinstance(segment_ids, BranchedSegments):
            return cls.shared_prefix(jnp.asarray(segment_ids.segment_ids).reshape(shape), segment_ids.slots)
        ids = segment_ids if segment_ids is not None else attention_mask
        if ids is None:
            return cls(causal=True)
        return cls.segments(jnp.asarray(ids).reshape(shape), causal=True)

    @property
    def has_segments(self) -> bool:
        return self.q_segment_ids is not None

    @property
    def has_branches(self) -> bool:
        return self.branch_ids is not None

    @property
    def key_segment_ids(self) -> Any:
        """The keys' ids (the queries' own for self-attention)."""
        return self.q_segment_ids if self.kv_segment_ids is None else self.kv_segment_ids

    @property
    def has_positions(self) -> bool:
        return self.q_positions is not None

    def dense(self, batch: int, q_len: int, kv_len: int) -> jax.Array:
        """bool [B, T, S]: the mask this description stands for (the xla path and tests)."""
        allowed = jnp.ones((batch, q_len, kv_len), jnp.bool_)
        if self.has_positions:
            qp = jnp.asarray(self.q_positions)[:, :, None]
            kp = jnp.asarray(self.kv_positions)[:, None, :]
        else:
            qp = jnp.arange(q_len)[None, :, None]
            kp = jnp.arange(kv_len)[None, None, :]
        if self.causal:
            allowed = allowed & (kp <= qp)
        if self.window is not None:
            allowed = allowed & (kp > qp - self.window)
            if not self.causal:
                allowed = allowed & (kp < qp + self.window)
        if self.has_segments:
            allowed = allowed & (
                jnp.asarray(self.q_segment_ids)[:, :, None] == jnp.asarray(self.key_segment_ids)[:, None, :]
            )
        if self.has_branches:  # a branch sees the shared prefix (branch 0) and itself
            branches = jnp.asarray(self.branch_ids)
            kb = branches[:, None, :]
            allowed = allowed & ((kb == 0) | (kb == branches[:, :, None]))
        return allowed


def check_implementation(name: str) -> str:
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {name!r} is not one of {IMPLEMENTATIONS}")
    return name


def target_platform() -> str:
    """The platform a traced computation will run on: the devices of the mesh set with `jax.set_mesh` (so AOT
    lowering for a TPU topology from a CPU host picks TPU kernels), else the default backend."""
    try:  # jax.sharding.get_mesh() refuses to run under jit; the context's concrete mesh is what it reads
        from jax._src.mesh import get_concrete_mesh

        mesh = get_concrete_mesh()
    except (ImportError, ValueError):
        mesh = None
    if mesh is not None and not mesh.empty:
        return str(np.asarray(mesh.devices).flat[0].platform)
    return jax.default_backend()


def resolve(implementation: str) -> str:
    """The concrete implementation: "auto" is splash on TPU, cudnn on GPU, xla elsewhere."""
    if check_implementation(implementation) != "auto":
        return implementation
    return {"tpu": "splash", "gpu": "cudnn", "cuda": "cudnn"}.get(target_platform(), "xla")


def _splash_block(length: int) -> int | None:
    return next((b for b in SPLASH_BLOCKS if length % b == 0), None)


def plan(implementation: str, q_len: int, kv_len: int, mask: AttentionMask, dtype: Any = jnp.bfloat16) -> str:
    """The implementation a call will really use: "xla", "splash", "cudnn" or "pallas_gpu" (see module docstring).

    cuDNN's fused attention takes 16-bit inputs only: float32 calls (tiny presets, the reward) take xla there."""
    chosen = resolve(implementation)
    if chosen == "xla" or mask.has_positions:
        return "xla"
    if mask.has_branches and (chosen != "splash" or mask.branch_slots is None):
        return "xla"  # only splash takes branches, as a static block mask of a fixed slot layout
    if chosen == "splash":
        aligned = _splash_block(q_len) is not None and _splash_block(kv_len) is not None
        return "splash" if aligned or q_len == kv_len or not mask.causal else "xla"
    # cudnn: causal / sliding window on aligned positions; segment ids through the Pallas GPU kernel
    if mask.has_segments:
        if mask.kv_segment_ids is not None or q_len != kv_len or mask.window is not None or q_len % 128:
            return "xla"
        return "pallas_gpu"
    return "cudnn" if jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)) else "xla"


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: AttentionMask,
    *,
    implementation: str = "auto",
    scale: float | None = None,
) -> jax.Array:
    """Softmax attention [B, T, H, D] of q [B, T, H, D] over k, v [B, S, KV, D] under `mask`."""
    b, t, h, d = q.shape
    s, kv = k.shape[1], k.shape[2]
    if h % kv:
        raise ValueError(f"{h} query heads are not a multiple of {kv} key/value heads")
    scale = d**-0.5 if scale is None else scale
    used = plan(implementation, t, s, mask, q.dtype)
    if used == "splash":
        return _splash(q, k, v, mask, scale)
    if used == "cudnn":
        return _cudnn(q, k, v, mask, scale)
    if used == "pallas_gpu":
        return _pallas_gpu(q, k, v, mask, scale)
    return _xla(q, k, v, mask, scale)


# ---- xla -----------------------------------------------------------------------------------------------------------


def _xla(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, scale: float) -> jax.Array:
    b, t = q.shape[:2]
    s = k.shape[1]
    unmasked = not (mask.causal or mask.has_segments or mask.window is not None)
    if unmasked and jax.default_backend() == "cpu" and q.shape[2] == k.shape[2]:
        return _per_head(q, k, v, scale)
    dense = None if unmasked else mask.dense(b, t, s)[:, None]
    return jax.nn.dot_product_attention(q, k, v, mask=dense, scale=scale)


def _per_head(q: jax.Array, k: jax.Array, v: jax.Array, scale: float) -> jax.Array:
    """Unmasked attention as a loop over (row, head) pairs of 2-D matmuls (DINOv2 on CPU).

    XLA:CPU runs batched dots and a [B, H, N, N] softmax poorly (3x slower than a loop over heads at N = 1025);
    the loop keeps each N x N score matrix in cache. Softmax normalisation is applied to the [N, D] output.
    """
    b, n, h, d = q.shape
    heads = [x.transpose(0, 2, 1, 3).reshape(b * h, x.shape[1], d) for x in (q, k, v)]

    def one(args):
        qh, kh, vh = args
        scores = jnp.dot(qh, kh.T).astype(jnp.float32) * scale
        weights = jnp.exp(scores - scores.max(axis=-1, keepdims=True))
        out = jnp.dot(weights.astype(vh.dtype), vh).astype(jnp.float32) / weights.sum(axis=-1, keepdims=True)
        return out.astype(vh.dtype)

    out = jax.lax.map(one, tuple(heads), batch_size=min(4, b * h))
    return out.reshape(b, h, n, d).transpose(0, 2, 1, 3)


# ---- splash (TPU) --------------------------------------------------------------------------------------------------


@functools.cache
def _shared_prefix_mask_class() -> type:
    """splash's computable-mask type for shared-prefix rows (made on first use: splash is imported lazily)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    class SharedPrefixMask(sm._ComputableMask):
        """Causal, and a key in a response slot is seen only from the same slot; prefix keys from every slot.

        Comparisons only (no integer division), so the same function serves numpy (the block tables) and the
        kernel (partial blocks). Positions past the slots (block padding) form one more slot."""

        def __init__(self, shape: tuple[int, int], slots: tuple[int, ...]):
            self.slots = tuple(slots)
            prefix, bounds = slots[0], [int(b) for b in np.cumsum(slots)[1:]]

            def shared_prefix_mask_function(q_ids, kv_ids):
                allowed = q_ids >= kv_ids
                if not bounds:
                    return allowed
                crossed = (kv_ids < bounds[0]) & (q_ids >= bounds[0])
                for bound in bounds[1:]:
                    crossed = crossed | ((kv_ids < bound) & (q_ids >= bound))
                return allowed & ((kv_ids < prefix) | ~crossed)

            super().__init__(shape=shape, mask_function=shared_prefix_mask_function)

        def __eq__(self, other: object):
            return isinstance(other, type(self)) and (self.shape, self.slots) == (other.shape, other.slots)

        def __hash__(self):
            return hash((type(self), self.shape, self.slots))

    return SharedPrefixMask


def _splash_kernel(heads: int, q_len: int, kv_len: int, causal: bool, window: int | None, interpret: bool,
                   slots: tuple[int, ...] | None = None):  # fmt: skip
    """A splash kernel for one shard (built per trace: its mask tables become constants of that trace; the block
    tables themselves are cached by the splash module). `slots`: a shared-prefix slot layout (causal)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    shape = (q_len, kv_len)
    if slots is not None:
        one = _shared_prefix_mask_class()(shape, slots)
    elif window is not None:
        one = sm.LocalMask(shape, window_size=(window - 1, 0 if causal else window - 1), offset=0)
    elif causal:
        one = sm.CausalMask(shape)
    else:
        one = sm.FullMask(shape)
    bq, bkv = _splash_block(q_len), _splash_block(kv_len)
    blocks = sk.BlockSizes(
        block_q=bq, block_kv=bkv, block_kv_compute=bkv,
        block_q_dkv=bq, block_kv_dkv=bkv, block_kv_dkv_compute=bkv,
        block_q_dq=bq, block_kv_dq=bkv,
    )  # fmt: skip
    return sk.make_splash_mha(
        sm.MultiHeadMask([one] * heads), block_sizes=blocks, head_shards=1, q_seq_shards=1, interpret=interpret
    )


def _splash_local(q: jax.Array, k: jax.Array, v: jax.Array, q_seg: Any, kv_seg: Any, *, causal: bool,
                  window: int | None, scale: float, interpret: bool,
                  slots: tuple[int, ...] | None = None) -> jax.Array:  # fmt: skip
    """Splash on one shard: [b, T, h, D] layout in and out; the kernel wants [heads, L, D] per row."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk

    kernel = _splash_kernel(q.shape[2], q.shape[1], k.shape[1], causal, window, interpret, slots)
    qh = (q * jnp.asarray(scale, q.dtype)).transpose(0, 2, 1, 3)
    kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    if q_seg is None:
        out = jax.vmap(kernel)(qh, kh, vh)
    else:
        out = jax.vmap(lambda a, b, c, sq, skv: kernel(a, b, c, segment_ids=sk.SegmentIds(q=sq, kv=skv)))(
            qh, kh, vh, q_seg, kv_seg
        )
    return out.transpose(0, 2, 1, 3).astype(q.dtype)


def _activation_specs(q: jax.Array, k: jax.Array, mesh: Any) -> tuple[Any, Any, Any]:
    """(q spec, k/v spec, segment spec): batch over the data axes, heads over tensor when q and kv heads divide."""
    from jax.sharding import PartitionSpec as P

    q_spec = sharding.logical_to_spec(("batch", None, "act_heads", None), q.shape, mesh)
    kv_spec = sharding.logical_to_spec(("batch", None, "act_heads", None), k.shape, mesh)
    if q_spec[2] != kv_spec[2]:  # GQA groups must stay whole on a shard
        q_spec, kv_spec = P(q_spec[0], None, None, None), P(kv_spec[0], None, None, None)
    if q_spec[0] != kv_spec[0]:
        raise ValueError(f"q {q.shape} and k {k.shape} shard their batch differently")
    return q_spec, kv_spec, P(q_spec[0], None)


def _pad_to_block(x: jax.Array, seg: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
    """Pad the sequence axis of x [B, L, ...] to a multiple of 128; the pad positions get segment id -1 (their own
    segment: real ids are >= 0), so they change nothing for real queries and no softmax row is empty (pads of q
    and kv line up: T == S, or attention is not causal)."""
    extra = -x.shape[1] % 128
    x = jnp.pad(x, [(0, 0), (0, extra)] + [(0, 0)] * (x.ndim - 2))
    return x, None if seg is None else jnp.pad(seg, [(0, 0), (0, extra)], constant_values=-1)


def _splash(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, scale: float) -> jax.Array:
    platform = target_platform()
    if platform not in ("tpu", "cpu"):
        raise ValueError(f"attention 'splash' is a TPU kernel (interpreted on CPU for tests), not for {platform}; "
                         "use 'cudnn' or 'auto'")  # fmt: skip
    interpret = platform != "tpu"
    local = functools.partial(_splash_local, causal=mask.causal, window=mask.window, scale=scale,
                              interpret=interpret, slots=mask.branch_slots)  # fmt: skip
    q_seg, kv_seg = mask.q_segment_ids, mask.key_segment_ids
    if q_seg is not None:
        q_seg, kv_seg = jnp.asarray(q_seg, jnp.int32), jnp.asarray(kv_seg, jnp.int32)
    t, kv_len = q.shape[1], k.shape[1]
    if _splash_block(t) is None or _splash_block(kv_len) is None:  # plan(): T == S or not causal
        if q_seg is None:
            q_seg, kv_seg = jnp.zeros((q.shape[0], t), jnp.int32), jnp.zeros((k.shape[0], kv_len), jnp.int32)
        q, q_seg = _pad_to_block(q, q_seg)
        k, kv_seg = _pad_to_block(k, kv_seg)
        v, _ = _pad_to_block(v, None)
        return _splash_call(local, q, k, v, q_seg, kv_seg)[:, :t]
    return _splash_call(local, q, k, v, q_seg, kv_seg)


def _splash_call(local: Any, q: jax.Array, k: jax.Array, v: jax.Array, q_seg: Any, kv_seg: Any) -> jax.Array:
    """`local` on each shard of the mesh (batch and heads as the activations are sharded), or directly."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty or not set(sharding.MESH_AXES) <= set(mesh.axis_names):
        return local(q, k, v, q_seg, kv_seg)
    if all(t == jax.sharding.AxisType.Manual for t in mesh.axis_types):  # already per shard (the engine's prefill)
        return local(q, k, v, q_seg, kv_seg)
    q_spec, kv_spec, seg_spec = _activation_specs(q, k, mesh)
    if q_seg is None:
        body = jax.shard_map(lambda a, b, c: local(a, b, c, None, None), mesh=mesh,
                             in_specs=(q_spec, kv_spec, kv_spec), out_specs=q_spec, check_vma=False)  # fmt: skip
        return body(q, k, v)
    body = jax.shard_map(local, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, seg_spec, seg_spec),
                         out_specs=q_spec, check_vma=False)  # fmt: skip
    return body(q, k, v, q_seg, kv_seg)


# ---- GPU -----------------------------------------------------------------------------------------------------------


def _cudnn(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, scale: float) -> jax.Array:
    window = None
    if mask.window is not None:
        window = (mask.window - 1, 0 if mask.causal else mask.window - 1)
    return jax.nn.dot_product_attention(
        q, k, v, scale=scale, is_causal=mask.causal, local_window_size=window, implementation="cudnn"
    )


def _pallas_gpu(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask, scale: float) -> jax.Array:
    """Triton flash attention with segment ids (q and kv ids equal: self-attention); kv heads repeated for GQA."""
    from jax.experimental.pallas.ops.gpu import attention as gpu_attention

    groups = q.shape[2] // k.shape[2]
    if groups > 1:
        k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
    interpret = target_platform() not in ("gpu", "cuda")
    return gpu_attention.mha(
        q, k, v, jnp.asarray(mask.q_segment_ids, jnp.int32), sm_scale=scale, causal=mask.causal, interpret=interpret
    )


# ---- paged decode attention (rollout engine) -----------------------------------------------------------------------


def paged_decode_attention(
    q: jax.Array,
    k_pages: jax.Array,
    v_pages: jax.Array,
    page_table: jax.Array,
    lengths: jax.Array,
    *,
    implementation: str = "auto",
    scale: float | None = None,
) -> jax.Array:
    """One query token per row over that row's own pages: q [B, H, D] -> [B, H, D].

    k_pages, v_pages [KV, N, P, D] (the layout of the Pallas paged kernels: N pages of P tokens per kv head);
    page_table [B, W] int32, the pages of row b in order; lengths [B]: keys 0 .. lengths[b] - 1 of the row are
    valid (at least 1). "auto" / "splash" on TPU is the Pallas TPU paged attention kernel (it reads only the row's
    pages) when the head dim is a multiple of 128; everything else is the reference gather path: the rows' pages
    gathered, then the same softmax as `attention`'s xla path (which the lockstep sampler's cache decode uses). The
    Pallas GPU paged kernel
    (`pallas.ops.gpu.paged_attention`, same page layout) is not wired in yet: GPU takes the gather path.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    # the kernel's blocks need a head dim that fills TPU lanes (a multiple of 128, as the 7B/8B models have); a
    # smaller one (the tiny presets' 16) does not lower, so it takes the gather path there
    if resolve(implementation) == "splash" and target_platform() == "tpu" and q.shape[-1] % 128 == 0:
        from jax.experimental.pallas.ops.tpu.paged_attention import paged_attention

        block = next(b for b in (8, 4, 2, 1) if page_table.shape[1] % b == 0)
        out = paged_attention((q * scale).astype(q.dtype), k_pages, v_pages, lengths.astype(jnp.int32),
                              page_table.astype(jnp.int32), pages_per_compute_block=block)  # fmt: skip
        return out.astype(q.dtype)
    return _paged_gather(q, k_pages, v_pages, page_table, lengths, scale)


def _paged_gather(
    q: jax.Array, k_pages: jax.Array, v_pages: jax.Array, page_table: jax.Array, lengths: jax.Array, scale: float
) -> jax.Array:
    """Reference path: gather each row's pages into [B, W * P, KV, D] and run the xla attention on them."""
    b, w = page_table.shape
    kv, _, p, d = k_pages.shape

    def rows(pages: jax.Array) -> jax.Array:
        return pages[:, page_table].reshape(kv, b, w * p, d).transpose(1, 2, 0, 3)

    keys = jnp.arange(w * p, dtype=jnp.int32)[None, :]
    mask = AttentionMask(
        q_segment_ids=jnp.ones((b, 1), jnp.int32),
        kv_segment_ids=(keys < lengths[:, None]).astype(jnp.int32),
        causal=False,
    )
    return _xla(q[:, None], rows(k_pages).astype(q.dtype), rows(v_pages).astype(q.dtype), mask, scale)[:, 0]
def set_implementation(module: Any, implementation: str) -> Any:
    """Switch every attention layer of `module` (a model loaded or built elsewhere) to `implementation`."""
    from flax import nnx

    check_implementation(implementation)
    for _, sub in nnx.iter_modules(module):
        if hasattr(sub, "implementation"):
            sub.implementation = implementation
    return module
