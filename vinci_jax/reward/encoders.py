"""Crop encoders: uint8 crops -> per-crop features on the device, plus the similarity of two feature rows.

An encoder is a pure pair of functions over explicit params so the reward can jit them once:
`features(params, crops_uint8[B, H, W, 3]) -> [B, D] float32` and `similarity(a[B, D], b[B, D]) -> [B] in [0, 1]`.
Features of a target are computed once and reused for every rollout of its prompt group.

- `Dinov2Encoder`: the released reward, DINOv2 CLS token, s = (1 + cos) / 2.
- `OfflineEncoder` ("offline-msssim-hist"): a weight-free, foreground-aware fallback for machines without DINOv2
  weights (see offline.py); it also weights crops by their content (`crop_mass`).
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from flax import nnx

from vinci_jax.reward.config import ENCODER_DINOV2, ENCODER_OFFLINE, RewardConfig
from vinci_jax.reward.offline import OFFLINE_FEATURE_DIM, offline_crop_mass, offline_features, offline_similarity
from vinci_jax.reward.tiling import IMAGENET_MEAN, IMAGENET_STD

COS_EPS = 1e-8  # torch.nn.functional.cosine_similarity's eps


class CropEncoder(Protocol):
    name: str
    params: Any

    def features(self, params: Any, crops: jax.Array) -> jax.Array: ...

    def similarity(self, a: jax.Array, b: jax.Array) -> jax.Array: ...


def imagenet_normalize(crops: jax.Array) -> jax.Array:
    """uint8 NHWC -> float32 exactly as torchvision ToTensor + Normalize(ImageNet)."""
    x = crops.astype(jnp.float32) / jnp.float32(255.0)
    return (x - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)


def cosine_score(a: jax.Array, b: jax.Array) -> jax.Array:
    """(1 + cos) / 2 per row, with torch.nn.functional.cosine_similarity's eps handling."""
    a = a.astype(jnp.float32)
    b = b.astype(jnp.float32)
    dot = jnp.sum(a * b, axis=-1)
    denom = jnp.sqrt(jnp.maximum(jnp.sum(a * a, axis=-1) * jnp.sum(b * b, axis=-1), COS_EPS * COS_EPS))
    return (1.0 + dot / denom) / 2.0


class Dinov2Encoder:
    """DINOv2 CLS features (pre- or post-final-LayerNorm) of ImageNet-normalised crops."""

    name = ENCODER_DINOV2

    def __init__(self, model: nnx.Module, *, post_layernorm: bool = False, compute_dtype: Any = jnp.float32):
        self.graphdef, self.params = nnx.split(model)
        self.post_layernorm = post_layernorm
        self.compute_dtype = jnp.dtype(compute_dtype)
        self.feature_dim = int(model.config.hidden_size)

    @property
    def label(self) -> str:
        feature = "cls_post_ln" if self.post_layernorm else "cls_pre_ln"
        return f"{self.name}:{feature}:{self.compute_dtype.name}"

    def features(self, params: Any, crops: jax.Array) -> jax.Array:
        model = nnx.merge(self.graphdef, params)
        x = imagenet_normalize(crops).astype(self.compute_dtype)
        return model.cls_features(x, self.post_layernorm).astype(jnp.float32)

    def similarity(self, a: jax.Array, b: jax.Array) -> jax.Array:
        return cosine_score(a, b)

    @classmethod
    def from_pretrained(
        cls, hf_dir: str | os.PathLike, *, post_layernorm: bool = False, compute_dtype: str = "float32", mesh=None
    ) -> Dinov2Encoder:
        from vinci_jax.hf.dinov2 import load_dinov2

        dtype = jnp.dtype(compute_dtype)
        model = load_dinov2(hf_dir, dtype=dtype, param_dtype=dtype, mesh=mesh)
        return cls(model, post_layernorm=post_layernorm, compute_dtype=dtype)


class OfflineEncoder:
    """Weight-free similarity on the same crops: foreground mask, edge and colour overlap at several scales."""

    name = ENCODER_OFFLINE
    label = ENCODER_OFFLINE
    feature_dim = OFFLINE_FEATURE_DIM

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def features(self, params: Any, crops: jax.Array) -> jax.Array:
        del params
        return offline_features(crops)

    def similarity(self, a: jax.Array, b: jax.Array) -> jax.Array:
        return offline_similarity(a, b)

    def crop_mass(self, a: jax.Array, b: jax.Array) -> jax.Array:
        """Per-pair crop weight (foreground content): empty tiles cannot carry a blank render."""
        return offline_crop_mass(a, b)


def build_encoder(config: RewardConfig, mesh=None) -> CropEncoder:
    """The encoder a config asks for. A `dinov2` config without weights is an error, never a random model."""
    if config.encoder == ENCODER_OFFLINE:
        return OfflineEncoder()
    if not config.encoder_path:
        raise ValueError(
            "reward encoder 'dinov2' needs encoder_path: a local HF Dinov2Model directory (e.g. a copy of "
            f"facebook/dinov2-large); without weights set encoder='{ENCODER_OFFLINE}' (weight-free fallback)"
        )
    return Dinov2Encoder.from_pretrained(
        config.encoder_path, post_layernorm=config.post_layernorm, compute_dtype=config.compute_dtype, mesh=mesh
    )
