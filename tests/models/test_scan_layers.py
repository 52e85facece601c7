"""The layer scan (`scan_layers=True`): both decoders, both vision towers and DINOv2 give the Python loop's outputs
and parameter gradients (float32, 1e-5) under remat policies, the fresh prefill writes the same caches, and the
lowered program holds the layer body once whatever the depth."""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vinci_jax import sharding
from vinci_jax.hf.check import random_batch
from vinci_jax.models.dinov2 import Dinov2Config, Dinov2Model
from vinci_jax.models.families import family_of_config
from vinci_jax.models.layers import scan_layers, set_scan_layers, stack_modules
from vinci_jax.models.qwen2_5_vl import Qwen25VLConfig, Qwen25VLForConditionalGeneration
from vinci_jax.models.qwen2_5_vl.modeling import Qwen2Model
from vinci_jax.models.qwen3_vl import Qwen3VLConfig
from vinci_jax.models.qwen3_vl.modeling import Qwen3VLForConditionalGeneration

TOL = 1e-5
# a small vocabulary with its own special ids keeps the embedding (and its gradient) tiny
SPECIALS = dict(image_token_id=250, video_token_id=251, vision_start_token_id=252, vision_end_token_id=253)


@pytest.fixture(scope="module", autouse=True)
def highest_precision():
    jax.config.update("jax_default_matmul_precision", "highest")
    yield
    jax.config.update("jax_default_matmul_precision", None)


def _close(a, b, tol: float = TOL) -> None:
    """Equal within `tol` relative to the larger magnitude."""
    a, b = np.asarray(a), np.asarray(b)
    scale = max(1.0, float(np.abs(b).max()))
    np.testing.assert_allclose(a, b, atol=tol * scale, rtol=0)


def _qwen25_config() -> Qwen25VLConfig:
    """Three vision blocks, full at 1 and windowed at 0 and 2 (4 x 4 patch windows); two decoder layers."""
    config = Qwen25VLConfig.tiny()
    return dataclasses.replace(
        config,
        vision=dataclasses.replace(config.vision, depth=3, fullatt_block_indexes=(1,)),
        text=dataclasses.replace(config.text, vocab_size=256, num_hidden_layers=2),
        **SPECIALS,
    )


def _qwen3_config() -> Qwen3VLConfig:
    """Three vision blocks with DeepStack taps at blocks 2 and 0 (listed out of order; block 1 is no tap), three
    decoder layers (the last one gets no DeepStack level)."""
    config = Qwen3VLConfig.tiny()
    return dataclasses.replace(
        config,
        vision=dataclasses.replace(config.vision, depth=3, deepstack_visual_indexes=(2, 0)),
        text=dataclasses.replace(config.text, vocab_size=256, num_hidden_layers=3),
        **SPECIALS,
    )


GRIDS = ((1, 4, 8), (1, 4, 4), (1, 2, 4))  # three images in one vision call, several windows in the first


def _inputs(config) -> tuple:
    """(input_ids, 3-D positions, attention mask, vision inputs) of two left-padded rows holding three images."""
    batch = random_batch(config, seed=3, grids=GRIDS)
    family = family_of_config(config)
    positions, _ = family.get_rope_index(batch.input_ids, batch.image_grid_thw, batch.attention_mask, config=config)
    vision = family.prepare_vision_inputs(batch.image_grid_thw, batch.pixel_values, config.vision)
    vision = jax.tree.map(jnp.asarray, vision)
    ids, mask = jnp.asarray(batch.input_ids, jnp.int32), jnp.asarray(batch.attention_mask, jnp.int32)
    assert batch.image_grid_thw.shape[0] >= 2  # several images in one vision call
    return ids, jnp.asarray(positions), mask, vision


def _forward_and_grads(model: nnx.Module, run, seed: int = 7) -> tuple[np.ndarray, dict]:
    """run(model) and the parameter gradients of a random projection of it, in one jitted program."""
    graphdef, params = nnx.split(model)
    shape = jax.eval_shape(lambda p: run(nnx.merge(graphdef, p)), params).shape
    weight = jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)

    @jax.jit
    def both(p):
        out, vjp = jax.vjp(lambda p: run(nnx.merge(graphdef, p)), p)
        return out, vjp(weight)[0]

    out, grads = both(params)
    return np.asarray(out), {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(grads)[0]}


def _assert_scan_equals_loop(model: nnx.Module, run) -> None:
    set_scan_layers(model, False)
    out_loop, grads_loop = _forward_and_grads(model, run)
    set_scan_layers(model, True)
    out_scan, grads_scan = _forward_and_grads(model, run)
    _close(out_scan, out_loop)
    assert grads_scan.keys() == grads_loop.keys()  # the same per-layer parameter paths (model.layers.<i>...)
    assert any("layer" in k for k in grads_loop) and len(grads_loop) > 20
    for path, g in grads_loop.items():
        if "layer" in path or "blocks" in path or "deepstack_merger_list" in path:
            assert float(np.abs(np.asarray(g)).max()) > 0, path  # every layer gets a gradient
        _close(grads_scan[path], g)


def _set_remat(model: nnx.Module, policy: str) -> None:
    for _, sub in nnx.iter_modules(model):
        if hasattr(sub, "remat_policy"):
            sub.remat_policy = policy


# The remat-free scan is covered by DINOv2 and the prefill below; the Qwen models' gradients run under a policy.
@pytest.mark.parametrize("policy", ["dots", pytest.param("none", marks=pytest.mark.slow)])
def test_qwen25_decoder_and_windowed_plus_full_vision_blocks(policy):
    config = _qwen25_config()
    model = Qwen25VLForConditionalGeneration(config, rngs=nnx.Rngs(0), remat_policy=policy)
    ids, positions, mask, vision = _inputs(config)
    _assert_scan_equals_loop(model, lambda m: m.hidden_states(ids, positions, mask, vision_inputs=vision))


@pytest.mark.parametrize("policy", ["full", pytest.param("none", marks=pytest.mark.slow)])
def test_qwen3_decoder_with_deepstack_injection_and_extraction(policy):
    """Gradients reach every DeepStack merger only through extraction (tower) and injection (decoder)."""
    config = _qwen3_config()
    model = Qwen3VLForConditionalGeneration(config, rngs=nnx.Rngs(1), remat_policy=policy)
    ids, positions, mask, vision = _inputs(config)
    _assert_scan_equals_loop(model, lambda m: m.hidden_states(ids, positions, mask, vision_inputs=vision))


def _scan_outputs(jaxpr) -> list:
    """Avals of every scan's outputs in a jaxpr and its sub-jaxprs (the forward scans' stacked residuals)."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            found.extend(v.aval for v in eqn.outvars)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found.extend(_scan_outputs(inner))
    return found


def test_deepstack_injection_saves_no_per_layer_mask():
    """Under the scan the gradient keeps no [layers, tokens, hidden] residual of the injection (a select's
    predicate and zeros were: pred[36, 24,576, 4,096] in the 8B GRPO gradient), nor any boolean of that size."""
    config = _qwen3_config()
    model = Qwen3VLForConditionalGeneration(config, rngs=nnx.Rngs(1), remat_policy="full", scan_layers=True)
    ids, positions, mask, vision = _inputs(config)
    graphdef, params = nnx.split(model)

    def loss(p):
        return jnp.sum(nnx.merge(graphdef, p).hidden_states(ids, positions, mask, vision_inputs=vision))

    outputs = _scan_outputs(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)
    layers, tokens, hidden = config.text.num_hidden_layers, ids.size, config.text.hidden_size
    per_token = [a for a in outputs if a.shape[:1] == (layers,) and (a.shape[1:3] == ids.shape or
                 a.shape[1:2] == (tokens,)) and a.size >= layers * tokens * hidden]  # fmt: skip
    # what stays: each layer's input, the stacked carry [layers, B, L, hidden] (a full-remat layer saves nothing else)
    assert per_token and all(a.shape == (layers, *ids.shape, hidden) for a in per_token), per_token
    assert not [a for a in outputs if a.dtype == jnp.bool_ and a.size >= tokens * hidden]


def test_dinov2_layers():
    config = Dinov2Config.tiny()
    model = Dinov2Model(config, rngs=nnx.Rngs(3))
    side = config.patch_size * 4
    pixels = jnp.asarray(np.random.default_rng(4).normal(size=(2, side, side, 3)), jnp.float32)
    _assert_scan_equals_loop(model, lambda m: m(pixels)[1])


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_fresh_prefill_writes_the_loops_cache(family):
    config = _qwen25_config() if family == "qwen2_5_vl" else _qwen3_config()
    cls = Qwen25VLForConditionalGeneration if family == "qwen2_5_vl" else Qwen3VLForConditionalGeneration
    model = cls(config, rngs=nnx.Rngs(4))
    ids, positions, mask, vision = _inputs(config)

    @nnx.jit
    def prefill(m):
        cache = m.init_cache(ids.shape[0], ids.shape[1] + 4)
        return m.forward_with_cache(ids, positions, cache, mask, vision_inputs=vision, fresh=True)

    logits_loop, cache_loop = prefill(model)
    set_scan_layers(model, True)
    logits_scan, cache_scan = prefill(model)
    _close(logits_scan, logits_loop)
    for a, b in zip(jax.tree.leaves(cache_scan), jax.tree.leaves(cache_loop), strict=True):
        _close(a, b)
    assert len(cache_scan.k) == config.text.num_hidden_layers


def _text_model(layers: int, scan: bool, policy: str = "full") -> Qwen2Model:
    text = dataclasses.replace(_qwen25_config().text, num_hidden_layers=layers)
    return Qwen2Model(text, rngs=nnx.Rngs(0), dtype=jnp.float32, param_dtype=jnp.float32, remat_policy=policy,
                      scan_layers=scan)  # fmt: skip


def _lowered_gradient_hlo(model: Qwen2Model) -> str:
    """StableHLO of the gradient of the decoder over a [2, 16] batch (lowered, not compiled)."""
    from vinci_jax.models.attention import AttentionMask

    graphdef, params = nnx.split(model)
    embeds = jnp.zeros((2, 16, model.config.hidden_size), jnp.float32)
    positions = jnp.broadcast_to(jnp.arange(16), (3, 2, 16))
    mask = AttentionMask.for_tokens(jnp.ones((2, 16), jnp.int32), shape=(2, 16))

    def loss(p):
        return jnp.sum(nnx.merge(graphdef, p)(embeds, positions, mask))

    return jax.jit(jax.grad(loss)).lower(params).as_text()


def _dots(hlo: str) -> int:
    return len(re.findall(r"stablehlo\.dot_general", hlo))


def _ops(hlo: str) -> int:
    return len(re.findall(r"\bstablehlo\.[a-z_]+", hlo))


def test_scanned_program_holds_the_layer_body_once():
    """2 and 6 decoder layers lower to the same number of matmuls under the scan (a while loop); the loop's grow.
    What the scanned program gains per layer is the stack of that layer's parameter leaves and its transpose in
    the gradient (the unstack), at most 3 ops per leaf (reshape into the stack; slice and reshape out of it):
    nothing of the layer body."""
    scanned = {n: _lowered_gradient_hlo(_text_model(n, scan=True)) for n in (2, 6)}
    looped = {n: _lowered_gradient_hlo(_text_model(n, scan=False)) for n in (2, 6)}
    assert _dots(scanned[2]) == _dots(scanned[6]) > 0
    assert "stablehlo.while" in scanned[6]
    assert _dots(looped[6]) > _dots(looped[2]) >= _dots(scanned[2])
    leaves = len(jax.tree.leaves(nnx.state(_text_model(1, scan=True).layers[0], nnx.Param)))  # per layer
    assert 0 < _ops(scanned[6]) - _ops(scanned[2]) <= 3 * leaves * 4 < _ops(looped[6]) - _ops(looped[2])


def test_stack_needs_identical_layers_and_keeps_their_sharding_names():
    a = _text_model(2, scan=True)
    graphdef, stacked = stack_modules(list(a.layers))
    kernel = stacked["mlp"]["gate_proj"]["kernel"]
    assert kernel.shape[0] == 2 and kernel.get_metadata()["logical_axes"] == ("embed", "mlp")
    other = _text_model(1, scan=True)
    other.layers[0].self_attn.implementation = "splash"  # built differently: a static attribute differs
    with pytest.raises(ValueError, match="built differently"):
        stack_modules([a.layers[0], other.layers[0]])
    with pytest.raises(ValueError, match="at least one"):
        scan_layers([], lambda m, x: x, lambda f, c, x: (f(c), None), jnp.zeros(()))


def test_scan_runs_under_a_sharded_mesh():
    """The stacked weights take their logical sharding with a replicated layer axis (one device: shapes only)."""
    model = _text_model(2, scan=True, policy="none")
    mesh = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
    with jax.set_mesh(mesh):
        hlo = _lowered_gradient_hlo(model)
    assert "stablehlo.while" in hlo


def test_config_flag_reaches_every_layer_stack():
    """--config.model.scan_layers: on in the pod presets, off for tiny; the trainer's model scans every stack."""
    from configs import sft as sft_config
    from configs import virl as virl_config
    from vinci_jax.train.model import ModelFactory

    for get, preset in [(sft_config, "qwen2_5_vl_7b"), (sft_config, "qwen3_vl_8b"), (virl_config, "qwen3_vl_8b"),
                        (virl_config, "qwen2_5_vl_7b")]:  # fmt: skip
        assert get.get_config(preset).model.scan_layers is True
    assert sft_config.get_config("tiny").model.scan_layers is False
    assert virl_config.get_config("tiny").model.scan_layers is False
    config = sft_config.get_config("tiny")
    config.model.family, config.model.scan_layers = "qwen3_vl", True
    factory = ModelFactory(config.model, sharding.make_mesh({"data": 1}, devices=jax.devices()[:1]), seed=0)
    flags = [m.scan_layers for _, m in nnx.iter_modules(factory.abstract) if hasattr(m, "scan_layers")]
    assert flags == [True, True]  # vision tower and decoder
