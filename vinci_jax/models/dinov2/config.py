"""DINOv2 configuration: a frozen dataclass that reads and writes HF `config.json` dicts.

One config covers both HF model types: `dinov2` (no register tokens, plain bicubic position interpolation) and
`dinov2_with_registers` (register tokens, antialiased bicubic), because the two differ only in those two places.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

_HF_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "mlp_ratio",
    "hidden_act",
    "layer_norm_eps",
    "image_size",
    "patch_size",
    "num_channels",
    "qkv_bias",
    "layerscale_value",
    "use_swiglu_ffn",
)


@dataclasses.dataclass(frozen=True)
class Dinov2Config:
    """Shapes and switches of a DINOv2 ViT (names as in HF's Dinov2Config)."""

    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    mlp_ratio: float = 4
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    image_size: int = 518
    patch_size: int = 14
    num_channels: int = 3
    qkv_bias: bool = True
    layerscale_value: float = 1.0
    use_swiglu_ffn: bool = False
    use_mask_token: bool = True
    num_register_tokens: int = 0
    # HF's dinov2_with_registers interpolates position embeddings with antialias=True, plain dinov2 without.
    interpolate_antialias: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def mlp_hidden(self) -> int:
        """Hidden width of the FFN: fc1 output, or the SwiGLU width (2/3 of it rounded up to a multiple of 8)."""
        hidden = int(self.hidden_size * self.mlp_ratio)
        if self.use_swiglu_ffn:
            hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        return hidden

    @property
    def num_positions_side(self) -> int:
        """Side of the square grid of learned position embeddings (37 for image_size 518 and patch 14)."""
        return self.image_size // self.patch_size

    @property
    def model_type(self) -> str:
        return "dinov2_with_registers" if self.num_register_tokens else "dinov2"

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any]) -> Dinov2Config:
        """From an HF config.json dict (model_type dinov2 or dinov2_with_registers)."""
        model_type = hf.get("model_type", "dinov2")
        if model_type not in ("dinov2", "dinov2_with_registers"):
            raise ValueError(
                f"config model_type {model_type!r} is not a DINOv2 model; expected dinov2(_with_registers)"
            )
        for key in ("image_size", "patch_size"):
            value = hf.get(key)
            if isinstance(value, (list, tuple)):
                if len(set(value)) != 1:
                    raise ValueError(f"non-square {key}={value} is not supported; DINOv2 checkpoints are square")
        kwargs: dict[str, Any] = {}
        for key in _HF_KEYS:
            if key in hf:
                value = hf[key]
                kwargs[key] = value[0] if isinstance(value, (list, tuple)) else value
        registers = model_type == "dinov2_with_registers"
        kwargs["num_register_tokens"] = int(hf.get("num_register_tokens", 4)) if registers else 0
        kwargs["use_mask_token"] = True if registers else bool(hf.get("use_mask_token", True))
        kwargs["interpolate_antialias"] = registers
        return cls(**kwargs)

    def to_hf(self) -> dict[str, Any]:
        """The HF config.json dict describing this model."""
        out: dict[str, Any] = {key: getattr(self, key) for key in _HF_KEYS}
        out["model_type"] = self.model_type
        if self.num_register_tokens:
            out["num_register_tokens"] = self.num_register_tokens
            out["architectures"] = ["Dinov2WithRegistersModel"]
        else:
            out["use_mask_token"] = self.use_mask_token
            out["architectures"] = ["Dinov2Model"]
        return out

    # Presets (facebook/dinov2-* shapes).
    @classmethod
    def tiny(cls, **overrides: Any) -> Dinov2Config:
        return cls(**{**dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, image_size=56), **overrides})

    @classmethod
    def small(cls) -> Dinov2Config:
        return cls(hidden_size=384, num_hidden_layers=12, num_attention_heads=6)

    @classmethod
    def base(cls) -> Dinov2Config:
        return cls(hidden_size=768, num_hidden_layers=12, num_attention_heads=12)

    @classmethod
    def large(cls) -> Dinov2Config:
        return cls(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16)

    @classmethod
    def giant(cls) -> Dinov2Config:
        return cls(hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, use_swiglu_ffn=True)
