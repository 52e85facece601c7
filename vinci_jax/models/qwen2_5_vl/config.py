"""Qwen2.5-VL configuration: frozen dataclasses with Hugging Face field names, presets, and config.json I/O.

Field names are the HF ones so that `from_hf`/`to_hf` are plain renames (the fields both families share are read
and written by `vinci_jax.models.qwen_vl.config`). `from_hf` reads both layouts found in the wild: transformers 5.x
(`text_config` + `rope_parameters` with `mrope_section`) and the original release layout (text fields at the top
level, `rope_scaling = {"type": "mrope", "mrope_section": ...}`, `rope_theta`). `to_hf` writes what transformers
5.24 `save_pretrained` writes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from vinci_jax.models.qwen_vl.config import (
    VISION_ROPE_THETA,
    QwenVLConfig,
    check_heads,
    hf_fields,
    text_fields_from_hf,
    text_fields_to_hf,
    vision_fields_from_hf,
    vision_fields_to_hf,
)

__all__ = ["VISION_ROPE_THETA", "Qwen25VLConfig", "TextConfig", "VisionConfig"]

# older spellings of vision config keys
_VISION_ALIASES = {"hidden_size": ("embed_dim",), "in_channels": ("in_chans",), "patch_size": ("spatial_patch_size",)}


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    depth: int = 32
    hidden_size: int = 1280
    hidden_act: str = "silu"
    intermediate_size: int = 3420
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    tokens_per_second: int = 2
    window_size: int = 112
    out_hidden_size: int = 3584
    fullatt_block_indexes: tuple[int, ...] = (7, 15, 23, 31)
    initializer_range: float = 0.02
    rope_theta: float = VISION_ROPE_THETA
    rms_norm_eps: float = 1e-6  # hard-coded in HF's vision blocks and merger, not a config.json field

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_hf(cls, d: Mapping[str, Any]) -> VisionConfig:
        return cls(
            **vision_fields_from_hf(cls, d, _VISION_ALIASES),
            **hf_fields(cls, d, ("tokens_per_second", "window_size")),
            fullatt_block_indexes=tuple(int(i) for i in d.get("fullatt_block_indexes", cls.fullatt_block_indexes)),
        )

    def to_hf(self) -> dict[str, Any]:
        return {
            **vision_fields_to_hf(self, "qwen2_5_vl_vision"),
            "fullatt_block_indexes": list(self.fullatt_block_indexes),
            "tokens_per_second": self.tokens_per_second,
            "window_size": self.window_size,
        }


@dataclasses.dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 152064
    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int = 4
    hidden_act: str = "silu"
    max_position_embeddings: int = 128000
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    mrope_section: tuple[int, ...] = (16, 24, 24)
    use_sliding_window: bool = False
    sliding_window: int | None = None  # HF keeps it only when use_sliding_window
    max_window_layers: int = 28
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    bos_token_id: int | None = 151643
    eos_token_id: int | None = 151645
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must divide by num_attention_heads")
        check_heads(self)
        if 2 * sum(self.mrope_section) != self.head_dim:
            raise ValueError(f"mrope_section {self.mrope_section} must sum to head_dim/2 = {self.head_dim // 2}")
        if self.use_sliding_window:
            raise NotImplementedError("sliding-window text attention is not supported (no Qwen2.5-VL release uses it)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, d: Mapping[str, Any]) -> TextConfig:
        fields, _ = text_fields_from_hf(cls, d)
        return cls(
            **fields,
            use_sliding_window=bool(d.get("use_sliding_window", False)),
            sliding_window=d.get("sliding_window") if d.get("use_sliding_window") else None,
            max_window_layers=int(d.get("max_window_layers", cls.max_window_layers)),
        )

    def to_hf(self) -> dict[str, Any]:
        return {
            **text_fields_to_hf(self, "qwen2_5_vl_text"),
            "layer_types": ["full_attention"] * self.num_hidden_layers,
            "max_window_layers": self.max_window_layers,
            "sliding_window": None,
            "use_sliding_window": False,
        }


_TEXT_KEYS = {f.name for f in dataclasses.fields(TextConfig)} | {"rope_parameters", "rope_scaling"}


@dataclasses.dataclass(frozen=True)
class Qwen25VLConfig(QwenVLConfig):
    vision: VisionConfig = dataclasses.field(default_factory=VisionConfig)
    text: TextConfig = dataclasses.field(default_factory=TextConfig)

    model_type = "qwen2_5_vl"
    architecture = "Qwen2_5_VLForConditionalGeneration"
    display_name = "Qwen2.5-VL"
    vision_config_class = VisionConfig
    text_config_class = TextConfig
    # tiny: a few-MB model for tests and the CPU demo; the others: shapes from the official
    # Qwen/Qwen2.5-VL-{3B,7B,32B,72B}-Instruct config.json files.
    sizes = {
        "tiny": dict(
            vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, window_size=56,
                        fullatt_block_indexes=(1,)),
            text=dict(vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      mrope_section=(2, 3, 3), max_window_layers=2),
        ),
        "3b": dict(
            vision=dict(out_hidden_size=2048, intermediate_size=3420),
            text=dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                      num_attention_heads=16, num_key_value_heads=2, max_window_layers=70),
            tie_word_embeddings=True,
        ),
        "7b": dict(
            vision=dict(out_hidden_size=3584, intermediate_size=3420),
            text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                      num_attention_heads=28, num_key_value_heads=4, max_window_layers=28),
        ),
        "32b": dict(
            vision=dict(out_hidden_size=5120, intermediate_size=3456),
            text=dict(vocab_size=152064, hidden_size=5120, intermediate_size=27648, num_hidden_layers=64,
                      num_attention_heads=40, num_key_value_heads=8, max_window_layers=64),
        ),
        "72b": dict(
            vision=dict(out_hidden_size=8192, intermediate_size=3456),
            text=dict(vocab_size=152064, hidden_size=8192, intermediate_size=29568, num_hidden_layers=80,
                      num_attention_heads=64, num_key_value_heads=8, max_window_layers=80),
        ),
    }  # fmt: skip

    @classmethod
    def text_dict(cls, d: Mapping[str, Any]) -> dict[str, Any]:
        """The release layout's top-level text fields, overridden by `text_config` (transformers 5.x)."""
        text = {k: v for k, v in d.items() if k in _TEXT_KEYS}
        text.update(d.get("text_config") or {})
        return text
