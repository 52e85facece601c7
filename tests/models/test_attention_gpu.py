"""The GPU attention kernels against the xla reference, on a real GPU (skipped on machines without one).

The CPU suite covers the Pallas GPU kernel in interpret mode only; cuDNN's fused attention has no CPU path at all, so
these tests are the only check that `implementation="cudnn"` computes what the xla path computes. Run them on a GPU
machine with a CUDA build of JAX (`pip install "jax[cuda13]==<the jax pin>"`), overriding the suite's CPU default:
`JAX_PLATFORMS=cuda,cpu .venv/bin/python -m pytest -q tests/models/test_attention_gpu.py`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vinci_jax.models.attention import AttentionMask, attention, plan


def _gpu() -> jax.Device:
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        pytest.skip("no GPU backend (needs a CUDA build of JAX and JAX_PLATFORMS=cuda,cpu)")


def _bf16_qkv(gpu: jax.Device, length: int, seed: int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
    """bf16 q [2, L, 8, 128], k / v [2, L, 2, 128] (grouped-query, as the 7B/8B decoders) on the GPU."""
    rng = np.random.default_rng(seed)
    shapes = [(2, length, 8, 128), (2, length, 2, 128), (2, length, 2, 128)]
    return tuple(jax.device_put(jnp.asarray(rng.normal(size=s), jnp.bfloat16), gpu) for s in shapes)


def _reference(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask) -> jax.Array:
    """The xla path in float32 on the same bf16 inputs: the kernels must land within bf16 rounding of it."""
    f32 = [x.astype(jnp.float32) for x in (q, k, v)]
    return attention(*f32, mask, implementation="xla")


def _assert_bf16_close(got: jax.Array, want: jax.Array) -> None:
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    np.testing.assert_allclose(got, want, atol=2e-2 * max(1.0, float(np.abs(want).max())), rtol=0)


@pytest.mark.parametrize("window", [None, 64])
def test_cudnn_equals_xla_forward_and_gradients(window: int | None) -> None:
    gpu = _gpu()
    q, k, v = _bf16_qkv(gpu, 512)
    mask = AttentionMask(causal=True, window=window)
    assert plan("cudnn", 512, 512, mask, jnp.bfloat16) == "cudnn"
    with jax.default_device(gpu):
        _assert_bf16_close(attention(q, k, v, mask, implementation="cudnn"), _reference(q, k, v, mask))

        def loss(impl: str):
            return lambda q, k, v: jnp.sum(attention(q, k, v, mask, implementation=impl).astype(jnp.float32) ** 2)

        got = jax.grad(loss("cudnn"), argnums=(0, 1, 2))(q, k, v)
        want = jax.grad(loss("xla"), argnums=(0, 1, 2))(*(x.astype(jnp.float32) for x in (q, k, v)))
    for g, w in zip(got, want, strict=True):
        _assert_bf16_close(g, w)


def test_pallas_gpu_kernel_with_segment_ids_on_a_gpu_equals_xla() -> None:
    """Packed rows (segment ids): the Triton kernel compiled for the GPU, not interpret mode."""
    gpu = _gpu()
    q, k, v = _bf16_qkv(gpu, 256, seed=3)
    ids = np.ones((2, 256), np.int32)
    ids[:, 100:] = 2
    ids[1, 200:] = 0
    mask = AttentionMask.for_tokens(segment_ids=ids, shape=ids.shape)
    assert plan("cudnn", 256, 256, mask, jnp.bfloat16) == "pallas_gpu"
    with jax.default_device(gpu):
        got = attention(q, k, v, mask, implementation="cudnn")
        want = _reference(q, k, v, mask)
    real = ids > 0  # padding rows' outputs are unspecified
    _assert_bf16_close(np.asarray(got, np.float32)[real], np.asarray(want)[real])
