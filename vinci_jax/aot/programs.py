"""The programs of an SFT or ViRL job, as (jitted function, abstract arguments): what the trainers run, unexecuted.

Each builder takes the job's config and a mesh (over real or compile-only TPU devices) and returns `Program`s whose
`fn` is the jitted function the trainer itself calls (SFTTrainer's train step, GRPOUpdater's gradient and apply,
the sampler's prefill and decode, the reward's scoring chunk) and whose `args` are ShapeDtypeStructs carrying the
shardings the trainer places its inputs on. Parameters stay abstract (`nnx.eval_shape`), so an 8B model costs no
memory. Batch shapes follow the config and the host-side bucketing rules (power-of-two prompt / response buckets,
window-slot vision rows); one image of `image_tokens` merged tokens per prompt stands for the data (0: text only,
which separates the decoder's memory from the vision tower's).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vinci_jax import sharding
from vinci_jax.aot import flops as flops_lib


@dataclasses.dataclass
class Program:
    """One jitted function and the abstract arguments to lower it with."""

    name: str
    fn: Any  # a jax.jit-wrapped function
    args: tuple[Any, ...]
    model_flops: float  # analytic FLOPs of one call, all chips together
    tokens: int  # tokens (or patches / crops) one call processes, for the report
    note: str = ""
    static: dict[str, Any] = dataclasses.field(default_factory=dict)  # static keyword arguments of `fn`
    depth_scaled: bool = True  # grows with the policy's decoder layers (False: reward encoder, vision tower)
    # XLA's cost analysis counts a while loop's body once; a decode loop runs it up to max_new times
    loop_iterations: int = 1


def _sds(shape: tuple[int, ...], dtype: Any, mesh: Mesh, names: tuple[str | None, ...] | None = None) -> Any:
    spec = PartitionSpec() if names is None else sharding.logical_to_spec(names, shape, mesh)
    dtype = dtype if jax.dtypes.issubdtype(dtype, jax.dtypes.extended) else jnp.dtype(dtype)
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))


def _with_shardings(abstract: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


# ------------------------------------------------------------------------------------------------ vision inputs
def image_grid(vision_config: Any, image_tokens: int) -> np.ndarray:
    """(t, h, w) patches of one square-ish image with about `image_tokens` merged tokens (t = 1 frame)."""
    merge = int(vision_config.spatial_merge_size)
    side = max(1, round(float(np.sqrt(image_tokens))))
    return np.asarray([[1, side * merge, max(1, image_tokens // side) * merge]], np.int64)


def vision_specs(
    vision_config: Any,
    images: int,
    image_tokens: int,
    mesh: Mesh,
    *,
    row_patches: int | None = None,
    rows: int | None = None,
    groups: int = 1,
) -> Any:
    """ShapeDtypeStructs of the `VisionInputs` that `prepare_vision_rows` (sampling, GRPO: the default) or the SFT
    pipeline (`groups` blocks of `rows` rows of `row_patches`) builds for `images` equal images per group."""
    from vinci_jax.models import vision_inputs as vi

    slot = vi.window_slot_patches(vision_config)
    unit = int(vision_config.spatial_merge_size) ** 2
    per_image = vi.image_slot_patches(image_grid(vision_config, image_tokens), vision_config)[0]
    if row_patches is None:  # prepare_vision_rows: rows sized by the largest image, row count a power of two
        length = vi.row_length_for([per_image], vision_config)
        need = -(-int(images) // max(length // per_image, 1))
        rows = 1 << max(need - 1, 0).bit_length()
    else:
        length = -(-int(row_patches) // slot) * slot
        while length < per_image:
            length *= 2
        rows = int(rows or 1)
    patch_dim = int(vision_config.in_channels * vision_config.temporal_patch_size * vision_config.patch_size**2)
    total = groups * rows * length
    first = ("batch",) if groups > 1 else None

    def spec(shape: tuple[int, ...], dtype: Any) -> Any:
        return _sds(shape, dtype, mesh, None if first is None else first + (None,) * (len(shape) - 1))

    return vi.VisionInputs(
        pixel_values=spec((groups * rows, length, patch_dim), jnp.float32),
        full_segment_ids=spec((groups * rows, length), jnp.int32),
        window_segment_ids=spec((total // slot, slot), jnp.int32),
        position_ids=spec((groups * rows, length, 2), jnp.int32),
        reverse_index=spec((total // unit,), jnp.int32),
        num_merged_tokens=spec((groups,) if groups > 1 else (), jnp.int32),
        groups=groups,
    )


def _vision_patches(vision: Any) -> tuple[int, int]:
    """(padded patches, row length) of a VisionInputs spec."""
    rows, length = vision.full_segment_ids.shape
    return rows * length, length


# ------------------------------------------------------------------------------------------------ SFT
def sft_programs(config: ml_collections.ConfigDict, mesh: Mesh, image_tokens: int) -> list[Program]:
    """The SFT train step at the config's batch (global_batch_size x seq_len, grad_accum_steps micro-batches)."""
    from vinci_jax.train import data as data_lib
    from vinci_jax.train.sft import SFTTrainer

    trainer = SFTTrainer(config, mesh)
    data = config.data
    rows, length, accum = int(data.global_batch_size), int(data.seq_len), int(config.grad_accum_steps)
    batch: dict[str, Any] = {
        key: jax.ShapeDtypeStruct(shape, dtype)
        for key, shape, dtype in (
            ("input_ids", (rows, length), jnp.int32),
            ("targets", (rows, length), jnp.int32),
            ("loss_mask", (rows, length), jnp.float32),
            ("segment_ids", (rows, length), jnp.int32),
            ("position_ids", (3, rows, length), jnp.int32),
        )
    }
    vision_config = getattr(trainer.factory.model_config, "vision", None)
    vision = None
    if vision_config is not None and data.source == "grain" and image_tokens > 0:
        # the SFT pipeline: one vision block per batch shard, each text row's patch budget full
        from vinci_jax.train.sft_data import VisionBatches

        groups = VisionBatches(iter(()), vision_config, 1, mesh).local_groups(rows)
        per_group = rows // groups
        row_patches = int(data.patches_per_row or 2 * length)
        vision = vision_specs(
            vision_config, 1, image_tokens, mesh, row_patches=row_patches,
            rows=1 << (per_group - 1).bit_length(), groups=groups,
        )  # fmt: skip
        batch["vision_inputs"] = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), vision)
    if accum > 1:
        batch = jax.tree.map(lambda s: jax.ShapeDtypeStruct((accum, *s.shape), s.dtype), batch)
    shardings = data_lib.batch_shardings(batch, mesh, accum=accum > 1)
    batch = _with_shardings(batch, shardings)
    fn = trainer.jitted_train_step(shardings)
    tokens = rows * length * accum
    model_config = trainer.factory.model_config
    model_flops = flops_lib.text_train_flops(model_config, trainer.split.params, rows * accum, length, length)
    if vision is not None:
        patches, row_len = _vision_patches(vision)
        model_flops += accum * flops_lib.vision_flops(vision_config, trainer.split.params, patches, row_len, 6)
    note = f"{accum} x {rows} rows x {length} tokens"
    return [Program("sft_train_step", fn, (trainer.abstract_state, batch), model_flops, tokens, note)]


# ------------------------------------------------------------------------------------------------ ViRL
@dataclasses.dataclass
class _Policy:
    split: Any
    model_config: Any
    optimizer: Any
    schedule: Any
    trainable: Any
    state_shardings: Any
    abstract_state: Any


def _virl_policy(config: ml_collections.ConfigDict, mesh: Mesh) -> _Policy:
    """The ViRL trainer's policy pieces (ViRLTrainer.__init__'s calls, without data, renderers or checkpoints)."""
    from vinci_jax.train import optimizer as opt_lib
    from vinci_jax.train import train_state as ts
    from vinci_jax.train.model import ModelFactory

    factory = ModelFactory(config.model, mesh, config.seed)
    graphdef, params_state, _ = factory.abstract_split()
    params_abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params_state.to_pure_dict())
    param_shardings = sharding.state_shardings(params_state, mesh).to_pure_dict()
    frozen = opt_lib.freeze_patterns(config.model, factory.freeze_groups)
    optimizer, schedule, trainable = opt_lib.make_optimizer(
        config.optimizer, int(config.num_steps), params_abstract, frozen
    )
    state_shardings = ts.train_state_shardings(params_abstract, param_shardings, optimizer, mesh)
    abstract_state = ts.abstract_train_state(params_abstract, optimizer, state_shardings)
    split = ts.SplitModel(graphdef, params_abstract, factory.rest())
    return _Policy(split, factory.model_config, optimizer, schedule, trainable, state_shardings, abstract_state)


def _prompt_len(config: ml_collections.ConfigDict) -> int:
    from vinci_jax.sampling.prompts import bucket_length

    return bucket_length(int(config.data.max_prompt_len))


def virl_programs(
    config: ml_collections.ConfigDict, mesh: Mesh, image_tokens: int, reward_crops: int = 0
) -> list[Program]:
    """GRPO micro-batch gradient and optimizer apply, sampler prefill and decode, reward encoder, vision tower."""
    from vinci_jax.rl.batch import bucket_length
    from vinci_jax.rl.updater import GRPOUpdater
    from vinci_jax.rl.virl import loss_config
    from vinci_jax.sampling import sampler as sampler_lib

    policy = _virl_policy(config, mesh)
    model_config, params = policy.model_config, policy.split.params
    vision_config = model_config.vision
    rows = int(config.algo.micro_batch_rows)
    prompt_len = _prompt_len(config)
    window = bucket_length(int(config.rollout.max_new_tokens), minimum=16)
    width = prompt_len + window
    updater = GRPOUpdater(
        policy.split, policy.optimizer, policy.schedule, policy.trainable, loss_config(config), mesh,
        group_size=int(config.rollout.n), micro_batch_rows=rows, vision_config=vision_config, pad_token_id=0,
        state_shardings=policy.state_shardings,
    )  # fmt: skip

    # GRPOUpdater._place: rows over the batch axes, position ids (3, B, L), images and scalars replicated
    def rows_spec(shape: tuple[int, ...], dtype: Any) -> Any:
        return _sds(shape, dtype, mesh, ("batch",) + (None,) * (len(shape) - 1))

    vision = vision_specs(vision_config, rows, image_tokens, mesh) if image_tokens > 0 else None
    micro: dict[str, Any] = {
        "input_ids": rows_spec((rows, width), jnp.int32),
        "attention_mask": rows_spec((rows, width), jnp.int32),
        "position_ids": _sds((3, rows, width), jnp.int32, mesh, (None, "batch", None)),
        "vision_inputs": vision,
        "response_start": _sds((), jnp.int32, mesh),
        "targets": rows_spec((rows, window), jnp.int32),
        "response_mask": rows_spec((rows, window), jnp.float32),
        "rollout_logprobs": rows_spec((rows, window), jnp.float32),
        "advantages": rows_spec((rows,), jnp.float32),
    }
    params_sds = policy.abstract_state["params"]
    normaliser = _sds((), jnp.float32, mesh)
    grad_flops = flops_lib.text_train_flops(model_config, params, rows, width, window)
    if vision is not None:
        patches, row_len = _vision_patches(vision)
        grad_flops += flops_lib.vision_flops(vision_config, params, patches, row_len, 6)
    grads_sds = _with_shardings(
        jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params_sds), policy.state_shardings["params"]
    )
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    programs = [
        Program(
            "grpo_grad", updater.grad_fn, (params_sds, micro, normaliser), grad_flops, rows * width,
            f"{rows} rollouts x ({prompt_len} prompt + {window} response) tokens, logit_chunk "
            f"{config.algo.logit_chunk}",
        ),
        Program(
            "grpo_apply", updater.apply_fn, (policy.abstract_state, grads_sds), 12.0 * n_params, 0,
            "AdamW + clipping over the summed gradient (state donated)",
        ),
    ]  # fmt: skip

    # sampler: one chunk of prompts, prefilled once, n continuations each
    chunk = int(config.rollout.chunk_prompts)
    n, max_new = int(config.rollout.n), int(config.rollout.max_new_tokens)
    graphdef, state = nnx.split(policy.split.merge(params_sds))
    prompt_vision = vision_specs(vision_config, chunk, image_tokens, mesh) if image_tokens > 0 else None
    replicated = lambda shape, dtype: _sds(shape, dtype, mesh)  # noqa: E731 - the sampler's host inputs (jnp.asarray)
    prefill_args = (
        graphdef,  # static (by name), passed in its position
        state,
        replicated((chunk, prompt_len), jnp.int32),
        replicated((chunk, prompt_len), jnp.int32),
        replicated((3, chunk, prompt_len), jnp.int32),
        prompt_vision,
    )
    prefill_static = {"max_len": prompt_len + max_new}
    prefill_flops = flops_lib.text_forward_flops(model_config, params, chunk, prompt_len, prompt_len, 1)
    if prompt_vision is not None:
        patches, row_len = _vision_patches(prompt_vision)
        prefill_flops += flops_lib.vision_flops(vision_config, params, patches, row_len, 2)
    programs.append(
        Program("sampler_prefill", sampler_lib._prefill, prefill_args, prefill_flops, chunk * prompt_len,
                f"{chunk} prompts x {prompt_len} tokens, cache for {prompt_len + max_new}", prefill_static)
    )  # fmt: skip
    with jax.set_mesh(mesh):
        out_cache = jax.eval_shape(functools.partial(sampler_lib._prefill, **prefill_static), *prefill_args)[1]
    cache_sds = _cache_specs(out_cache, mesh)
    decode_rows = chunk * n
    decode_args = (
        graphdef,
        state,
        cache_sds,
        replicated((chunk, int(model_config.text.vocab_size)), jnp.float32),
        replicated((chunk,), jnp.int32),
        replicated((decode_rows,), jax.random.key(0).dtype),
        replicated((), jnp.float32),
        replicated((), jnp.float32),
        replicated((2,), jnp.int32),
        replicated((), jnp.int32),
    )
    if "limits" in inspect.signature(sampler_lib._decode).parameters:  # per-row token limits [B*n], when taken
        decode_args += (replicated((decode_rows,), jnp.int32),)
    top_p, top_k = float(config.rollout.top_p), int(config.rollout.top_k)
    decode_static = {
        "n": n, "max_new": max_new, "greedy": False, "top_k": top_k, "use_top_p": top_p < 1.0,
    }  # fmt: skip
    decode_flops = flops_lib.decode_flops(model_config, params, decode_rows, prompt_len, max_new)
    programs.append(
        Program("sampler_decode", sampler_lib._decode, decode_args, decode_flops, decode_rows * max_new,
                f"{decode_rows} rows x {max_new} new tokens (compiled FLOPs: one loop step x {max_new})",
                decode_static, loop_iterations=max_new)
    )  # fmt: skip
    if config.algo.get("row_layout") == "shared_prefix":  # beside grpo_grad (unshared rows): the ratio of the two
        programs.insert(1, shared_prefix_grad_program(config, mesh, image_tokens, policy))
    if str(config.rollout.get("engine", "paged")) == "paged":
        programs.append(engine_prefill_program(config, mesh, policy, image_tokens))
        programs.append(engine_decode_program(config, mesh, policy))
    programs.append(_reward_program(config, mesh, reward_crops))
    if vision is not None:
        programs.append(_vision_program(policy, vision, mesh))
    return programs


def shared_prefix_grad_program(
    config: ml_collections.ConfigDict, mesh: Mesh, image_tokens: int, policy: Any = None
) -> Program:
    """The GRPO micro-batch gradient on shared-prefix rows (`algo.row_layout=shared_prefix`, vinci_jax.rl.batch):
    `algo.group_rows` rows (0: micro_batch_rows / n, grpo_grad's rollouts) of one prompt slot then n response slots
    (one image per row). Analytic FLOPs count attention at the mask's allowed (causal, same-branch)
    key-query pairs, as a block-sparse kernel computes it (grpo_grad's count is at the dense length)."""
    from vinci_jax.models.attention import BranchedSegments
    from vinci_jax.rl.batch import slot_length
    from vinci_jax.rl.updater import GRPOUpdater
    from vinci_jax.rl.virl import loss_config

    policy = policy or _virl_policy(config, mesh)
    model_config, params, text = policy.model_config, policy.split.params, policy.model_config.text
    n = int(config.rollout.n)
    groups = int(config.algo.get("group_rows", 0)) or max(1, int(config.algo.micro_batch_rows) // n)
    # the updater's slots for full-length rollouts: prompt and response capacity rounded to an eighth of their bucket
    max_new = int(config.rollout.max_new_tokens)
    prompt, slot = slot_length(int(config.data.max_prompt_len), _prompt_len(config)), slot_length(max_new, max_new)
    slots, length, window = (prompt,) + (slot,) * n, prompt + n * slot, n * slot
    updater = GRPOUpdater(
        policy.split, policy.optimizer, policy.schedule, policy.trainable, loss_config(config), mesh,
        group_size=n, micro_batch_rows=groups * n, vision_config=model_config.vision, pad_token_id=0,
        state_shardings=policy.state_shardings, layout="shared_prefix", group_rows=groups,
    )  # fmt: skip

    def rows_spec(shape: tuple[int, ...], dtype: Any) -> Any:
        return _sds(shape, dtype, mesh, ("batch",) + (None,) * (len(shape) - 1))

    vision = vision_specs(model_config.vision, groups, image_tokens, mesh) if image_tokens > 0 else None
    micro: dict[str, Any] = {
        "input_ids": rows_spec((groups, length), jnp.int32),
        "segment_ids": BranchedSegments(rows_spec((groups, length), jnp.int32), slots),
        "position_ids": _sds((3, groups, length), jnp.int32, mesh, (None, "batch", None)),
        "vision_inputs": vision,
        **{key: rows_spec((groups, window), jnp.int32) for key in ("target_positions", "targets")},
        **{key: rows_spec((groups, window), jnp.float32)
           for key in ("response_mask", "rollout_logprobs", "advantages")},
    }  # fmt: skip
    parts = flops_lib._matmul_params(params)
    pairs = prompt * (prompt + 1) / 2 + n * (slot * prompt + slot * (slot + 1) / 2)  # allowed pairs per row
    attention = 4.0 * text.num_hidden_layers * flops_lib._attention_width(text) * pairs * groups
    dense = 2.0 * parts["text"] * groups * length + 2.0 * flops_lib._head_params(model_config, parts) * groups * window
    grad_flops = 3.0 * (dense + attention)
    if vision is not None:
        patches, row_len = _vision_patches(vision)
        grad_flops += flops_lib.vision_flops(model_config.vision, params, patches, row_len, 6)
    return Program(
        "grpo_grad_shared_prefix", updater.grad_fn, (policy.abstract_state["params"], micro,
        _sds((), jnp.float32, mesh)), grad_flops, groups * length,
        f"{groups * n} rollouts as {groups} rows x ({prompt} prompt + {n} x {slot} response) tokens, logit_chunk "
        f"{config.algo.logit_chunk}",
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class _EngineGeometry:
    """The rollout engine's shapes on a mesh, shared by engine_decode and engine_prefill."""

    dtype: Any
    prompts: int
    n: int
    prompt_len: int
    max_new: int
    page_size: int
    shards: int
    pages: int  # per shard, the sink included
    width: int  # page-table width (prompt bucket + max_new_tokens)
    state: Any  # the model's abstract nnx state
    graphdef: Any


def _engine_geometry(config: ml_collections.ConfigDict, mesh: Mesh, policy: _Policy) -> _EngineGeometry:
    from vinci_jax.sampling.decode_policy import resolve_decode_dtype
    from vinci_jax.sampling.engine_shards import shard_count
    from vinci_jax.sampling.pages import pages_for_budget, pages_for_tokens
    from vinci_jax.train.model import resolve_model

    paged = config.rollout.paged
    dtype = resolve_decode_dtype(str(paged.get("decode_dtype", "auto")), "tpu")
    prompt_len, max_new, size = _prompt_len(config), int(config.rollout.max_new_tokens), int(paged.page_size)
    # the pool's page count from the full-depth model (a --num_layers compile keeps it, so its bytes extrapolate)
    full_model = ml_collections.ConfigDict(config.model.to_dict())
    full_model.num_layers = 0
    full_text = resolve_model(full_model)[1].text
    graphdef, state = nnx.split(policy.split.merge(policy.split.params))
    return _EngineGeometry(
        dtype, int(config.data.prompts_per_step), int(config.rollout.n), prompt_len, max_new, size,
        shard_count(mesh), pages_for_budget(full_text, size, dtype, float(paged.memory_budget_mb)),
        pages_for_tokens(prompt_len + max_new, size), state, graphdef,
    )  # fmt: skip


def engine_decode_program(config: ml_collections.ConfigDict, mesh: Mesh, policy: _Policy) -> Program:
    """The rollout engine's decode burst (`sampling.engine_shards`): a step's prompts x n rows decoding at once,
    spread over the data-parallel shards, each with its own page pool of `rollout.paged.memory_budget_mb` MiB and
    the bf16 decode copy of the weights; full bucket, page table as wide as prompt + max_new_tokens."""
    from vinci_jax.sampling.engine_shards import decode_burst_inputs, sharded_decode_burst

    geo, paged, text = _engine_geometry(config, mesh, policy), config.rollout.paged, policy.model_config.text
    rows, steps, size, pages = geo.prompts * geo.n, int(paged.steps_per_sync), geo.page_size, geo.pages
    slots = -(-rows // geo.shards)
    args = decode_burst_inputs(mesh, geo.state, text, slots_per_shard=slots, pages_per_shard=pages, page_size=size,
                               width=geo.width, prompts=geo.prompts, rows=rows, dtype=geo.dtype)  # fmt: skip
    top_p = float(config.rollout.top_p)
    fn = sharded_decode_burst(mesh, geo.graphdef, steps=steps, greedy=False, top_k=int(config.rollout.top_k),
                              use_top_p=top_p < 1.0)  # fmt: skip
    flops = flops_lib.decode_flops(policy.model_config, policy.split.params, rows, geo.prompt_len, steps)
    return Program("engine_decode", fn, args, flops, rows * steps,
                   f"{rows} rows ({slots} slots x {geo.shards} shards) x {steps} steps over {pages} pages of {size} "
                   f"tokens a shard, table {geo.width} pages, {jnp.dtype(geo.dtype).name} weights (compiled FLOPs: "
                   f"one step x {steps})", loop_iterations=steps)  # fmt: skip


def engine_prefill_program(
    config: ml_collections.ConfigDict, mesh: Mesh, policy: _Policy, image_tokens: int
) -> Program:
    """The rollout engine's prefill of one group into pages (`sampling.engine.prefill_pages` per data-parallel
    shard): `rollout.paged.prefill_prompts` prompts a shard at the prompt bucket, one image of `image_tokens` each
    through the vision tower, keys/values written into the shard's pool (sized as engine_decode's), last-position
    logits kept per prompt; the group's dense cache is a temporary of this call."""
    from vinci_jax.sampling.engine_shards import prefill_pages_inputs, sharded_prefill_pages

    geo, text = _engine_geometry(config, mesh, policy), policy.model_config.text
    group = int(config.rollout.paged.get("prefill_prompts", 4))
    vision_config = policy.model_config.vision
    vision = vision_specs(vision_config, group, image_tokens, mesh) if image_tokens > 0 else None
    args = prefill_pages_inputs(
        mesh, geo.state, text, group=group, length=geo.prompt_len, pages_per_shard=geo.pages,
        page_size=geo.page_size, prompts_per_shard=-(-geo.prompts // geo.shards), vision=vision, dtype=geo.dtype,
    )  # fmt: skip
    rows = geo.shards * group
    flops = flops_lib.text_forward_flops(policy.model_config, policy.split.params, rows, geo.prompt_len, 1, 1)
    if vision is not None:
        patches, row_len = _vision_patches(vision)
        flops += geo.shards * flops_lib.vision_flops(vision_config, policy.split.params, patches, row_len, 2)
    images = f", one image of {image_tokens} tokens each" if vision is not None else ""
    note = (f"{group} prompts x {geo.prompt_len} tokens a shard x {geo.shards} shards{images}, into {geo.pages} "
            f"pages of {geo.page_size} tokens a shard, {jnp.dtype(geo.dtype).name} weights")  # fmt: skip
    fn = sharded_prefill_pages(mesh, geo.graphdef)
    return Program("engine_prefill", fn, args, flops, rows * geo.prompt_len, note)


def _cache_specs(cache: Any, mesh: Mesh) -> Any:
    """The prefill's cache as decode inputs, on the cache's logical shardings (rows over the batch axes)."""

    def one(leaf: Any) -> Any:
        if leaf.ndim >= 4:  # [layers?, batch, seq, heads, dim] or [batch, seq, heads, dim]
            lead = leaf.ndim - 4
            names = (None,) * lead + ("cache_batch", "cache_seq", "cache_heads", None)
            return _sds(leaf.shape, leaf.dtype, mesh, names)
        return _sds(leaf.shape, leaf.dtype, mesh)

    return jax.tree.map(one, cache)


def _reward_program(config: ml_collections.ConfigDict, mesh: Mesh, crops: int = 0) -> Program:
    """The reward's jitted scoring chunk (encoder features of `crops` crops, default the largest crop bucket, and
    their similarity to the targets)."""
    from vinci_jax.reward import visual
    from vinci_jax.reward.encoders import Dinov2Encoder, OfflineEncoder
    from vinci_jax.rl.virl import reward_config

    reward = reward_config(config)
    if reward.encoder == "dinov2":
        from vinci_jax.models.dinov2.config import Dinov2Config
        from vinci_jax.models.dinov2.modeling import Dinov2Model

        dtype = jnp.dtype(reward.compute_dtype)
        model = nnx.eval_shape(lambda: Dinov2Model(Dinov2Config.large(), rngs=nnx.Rngs(0), dtype=dtype))
        encoder: Any = Dinov2Encoder(model, post_layernorm=reward.post_layernorm, compute_dtype=dtype)
        state = encoder.params  # nnx.State of Variables holding ShapeDtypeStructs
        encoder.params = jax.tree.map(
            lambda v, s: v.replace(jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s)),
            state,
            sharding.state_shardings(state, mesh),
            is_leaf=lambda x: isinstance(x, nnx.Variable),
        )
        dim = int(model.config.hidden_size)
        patches = (reward.tile_size // model.config.patch_size) ** 2 + 1
        per_crop = 2.0 * sum(int(np.prod(v.shape)) for v in jax.tree.leaves(state) if len(v.shape) >= 2) * patches
        per_crop += 4.0 * model.config.num_hidden_layers * dim * patches * patches
    else:
        encoder, dim, per_crop = OfflineEncoder(), OfflineEncoder.feature_dim, 0.0
    _, score_chunk, _ = visual._jitted(encoder)
    crops = crops or reward.crop_buckets[-1]
    groups = int(config.rollout.chunk_prompts)
    crop_spec = _sds((crops, reward.tile_size, reward.tile_size, 3), jnp.uint8, mesh, ("batch", None, None, None))
    args = (
        encoder.params,
        crop_spec,
        _sds((crops, dim), jnp.float32, mesh),
        _sds((crops,), jnp.int32, mesh),
        _sds((crops,), jnp.int32, mesh),
        _sds((crops,), jnp.float32, mesh),
        # the accumulator: one similarity sum per rollout, plus its crop weight when the encoder weights crops
        _sds((groups * int(config.rollout.n),) + ((2,) if hasattr(encoder, "crop_mass") else ()), jnp.float32, mesh),
    )
    return Program("reward_encoder", score_chunk, args, per_crop * crops, crops,
                   f"{reward.encoder}: {crops} crops of {reward.tile_size}px", depth_scaled=False)  # fmt: skip


def _vision_program(policy: _Policy, vision: Any, mesh: Mesh) -> Program:
    """The policy's vision tower alone over one GRPO micro-batch's images (forward; inside grpo_grad and prefill)."""
    split = policy.split

    def tower(params: Any, inputs: Any) -> Any:
        return split.merge(params).visual(inputs)

    with jax.set_mesh(mesh):
        fn = jax.jit(tower)
    patches, row_len = _vision_patches(vision)
    model_flops = flops_lib.vision_flops(policy.model_config.vision, split.params, patches, row_len, 2)
    return Program("vision_tower", fn, (policy.abstract_state["params"], vision), model_flops, patches,
                   f"{patches} patches in rows of {row_len} (the micro-batch's layout, forward only)",
                   depth_scaled=False)  # fmt: skip


def build_programs(
    config: ml_collections.ConfigDict, mesh: Mesh, image_tokens: int, reward_crops: int = 0
) -> list[Program]:
    if config.job == "sft":
        return sft_programs(config, mesh, image_tokens)
    if config.job == "virl":
        return virl_programs(config, mesh, image_tokens, reward_crops)
    raise ValueError(f"vinci_jax.aot compiles the sft and virl jobs; this config's job is {config.job!r}")
