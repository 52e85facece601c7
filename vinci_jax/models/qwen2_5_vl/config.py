"""Qwen2.5-VL configuration: frozen dataclasses with Hugging Face field names, presets, and config.json I/O.

Field names are the HF ones so that `from_hf`/`to_hf` are plain renames. `from_hf` reads both layouts found in the
wild: transformers 5.x (`text_config` + `rope_parameters` with `mrope_section`) and the original release layout
(text fields at the top level, `rope_scaling = {"type": "mrope", "mrope_section": ...}`, `rope_theta`).
`to_hf` writes what transformers 5.24 `save_pretrained` writes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

VISION_ROPE_THETA = 10000.0


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
        rope = d.get("rope_parameters") or {}
        return cls(
            depth=int(d.get("depth", cls.depth)),
            hidden_size=int(d.get("hidden_size", d.get("embed_dim", cls.hidden_size))),
            hidden_act=str(d.get("hidden_act", cls.hidden_act)),
            intermediate_size=int(d.get("intermediate_size", cls.intermediate_size)),
            num_heads=int(d.get("num_heads", cls.num_heads)),
            in_channels=int(d.get("in_channels", d.get("in_chans", cls.in_channels))),
            patch_size=int(d.get("patch_size", d.get("spatial_patch_size", cls.patch_size))),
            spatial_merge_size=int(d.get("spatial_merge_size", cls.spatial_merge_size)),
            temporal_patch_size=int(d.get("temporal_patch_size", cls.temporal_patch_size)),
            tokens_per_second=int(d.get("tokens_per_second", cls.tokens_per_second)),
            window_size=int(d.get("window_size", cls.window_size)),
            out_hidden_size=int(d.get("out_hidden_size", cls.out_hidden_size)),
            fullatt_block_indexes=tuple(int(i) for i in d.get("fullatt_block_indexes", cls.fullatt_block_indexes)),
            initializer_range=float(d.get("initializer_range", cls.initializer_range)),
            rope_theta=float(rope.get("rope_theta", VISION_ROPE_THETA)),
        )

    def to_hf(self) -> dict[str, Any]:
        return {
            "depth": self.depth,
            "fullatt_block_indexes": list(self.fullatt_block_indexes),
            "hidden_act": self.hidden_act,
            "hidden_size": self.hidden_size,
            "in_channels": self.in_channels,
            "initializer_range": self.initializer_range,
            "intermediate_size": self.intermediate_size,
            "model_type": "qwen2_5_vl_vision",
            "num_heads": self.num_heads,
            "out_hidden_size": self.out_hidden_size,
            "patch_size": self.patch_size,
            "rope_parameters": {"rope_theta": self.rope_theta, "rope_type": "axial"},
            "spatial_merge_size": self.spatial_merge_size,
            "temporal_patch_size": self.temporal_patch_size,
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
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} must divide by num_key_value_heads "
                f"{self.num_key_value_heads}"
            )
        if 2 * sum(self.mrope_section) != self.head_dim:
            raise ValueError(f"mrope_section {self.mrope_section} must sum to head_dim/2 = {self.head_dim // 2}")
        if self.use_sliding_window:
            raise NotImplementedError("sliding-window text attention is not supported (no Qwen2.5-VL release uses it)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, d: Mapping[str, Any]) -> TextConfig:
        rope = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
        theta = rope.get("rope_theta", d.get("rope_theta", cls.rope_theta))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", "mrope"):
            raise NotImplementedError(f"rope_type {rope_type!r} is not supported; only default mRoPE is")
        heads = int(d.get("num_attention_heads", cls.num_attention_heads))
        return cls(
            vocab_size=int(d.get("vocab_size", cls.vocab_size)),
            hidden_size=int(d.get("hidden_size", cls.hidden_size)),
            intermediate_size=int(d.get("intermediate_size", cls.intermediate_size)),
            num_hidden_layers=int(d.get("num_hidden_layers", cls.num_hidden_layers)),
            num_attention_heads=heads,
            num_key_value_heads=int(d.get("num_key_value_heads") or heads),
            hidden_act=str(d.get("hidden_act", cls.hidden_act)),
            max_position_embeddings=int(d.get("max_position_embeddings", cls.max_position_embeddings)),
            rms_norm_eps=float(d.get("rms_norm_eps", cls.rms_norm_eps)),
            rope_theta=float(theta),
            mrope_section=tuple(int(s) for s in rope.get("mrope_section", cls.mrope_section)),
            use_sliding_window=bool(d.get("use_sliding_window", False)),
            sliding_window=d.get("sliding_window") if d.get("use_sliding_window") else None,
            max_window_layers=int(d.get("max_window_layers", cls.max_window_layers)),
            attention_dropout=float(d.get("attention_dropout", 0.0)),
            initializer_range=float(d.get("initializer_range", cls.initializer_range)),
            bos_token_id=d.get("bos_token_id", cls.bos_token_id),
            eos_token_id=d.get("eos_token_id", cls.eos_token_id),
            pad_token_id=d.get("pad_token_id", cls.pad_token_id),
        )

    def to_hf(self) -> dict[str, Any]:
        return {
            "attention_dropout": self.attention_dropout,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "hidden_act": self.hidden_act,
            "hidden_size": self.hidden_size,
            "initializer_range": self.initializer_range,
            "intermediate_size": self.intermediate_size,
            "layer_types": ["full_attention"] * self.num_hidden_layers,
            "max_position_embeddings": self.max_position_embeddings,
            "max_window_layers": self.max_window_layers,
            "model_type": "qwen2_5_vl_text",
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "num_key_value_heads": self.num_key_value_heads,
            "pad_token_id": self.pad_token_id,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": {
                "mrope_section": list(self.mrope_section),
                "rope_theta": self.rope_theta,
                "rope_type": "default",
            },
            "sliding_window": None,
            "use_cache": True,
            "use_sliding_window": False,
            "vocab_size": self.vocab_size,
        }


_TEXT_KEYS = {f.name for f in dataclasses.fields(TextConfig)} | {"rope_parameters", "rope_scaling"}


@dataclasses.dataclass(frozen=True)
class Qwen25VLConfig:
    vision: VisionConfig = dataclasses.field(default_factory=VisionConfig)
    text: TextConfig = dataclasses.field(default_factory=TextConfig)
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    tie_word_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.vision.out_hidden_size != self.text.hidden_size:
            raise ValueError(
                f"vision.out_hidden_size {self.vision.out_hidden_size} must equal text.hidden_size "
                f"{self.text.hidden_size} (merged image features replace token embeddings)"
            )

    @classmethod
    def from_hf(cls, d: Mapping[str, Any]) -> Qwen25VLConfig:
        """From a config.json dict of either layout (see module docstring)."""
        if d.get("model_type", "qwen2_5_vl") != "qwen2_5_vl":
            raise ValueError(f"config.json has model_type {d.get('model_type')!r}; expected 'qwen2_5_vl'")
        text = {k: v for k, v in d.items() if k in _TEXT_KEYS}
        text.update(d.get("text_config") or {})
        tie = d.get("tie_word_embeddings")
        if tie is None:
            tie = (d.get("text_config") or {}).get("tie_word_embeddings", False)
        return cls(
            vision=VisionConfig.from_hf(d.get("vision_config") or {}),
            text=TextConfig.from_hf(text),
            image_token_id=int(d.get("image_token_id", cls.image_token_id)),
            video_token_id=int(d.get("video_token_id", cls.video_token_id)),
            vision_start_token_id=int(d.get("vision_start_token_id", cls.vision_start_token_id)),
            vision_end_token_id=int(d.get("vision_end_token_id", cls.vision_end_token_id)),
            tie_word_embeddings=bool(tie),
        )

    def to_hf(self, dtype: str = "bfloat16") -> dict[str, Any]:
        """config.json content as transformers 5.24 `save_pretrained` writes it; `dtype` names the tensors' dtype."""
        return {
            "architectures": ["Qwen2_5_VLForConditionalGeneration"],
            "dtype": dtype,
            "image_token_id": self.image_token_id,
            "model_type": "qwen2_5_vl",
            "text_config": self.text.to_hf(),
            "tie_word_embeddings": self.tie_word_embeddings,
            "video_token_id": self.video_token_id,
            "vision_config": self.vision.to_hf(),
            "vision_end_token_id": self.vision_end_token_id,
            "vision_start_token_id": self.vision_start_token_id,
        }

    def replace(self, **changes: Any) -> Qwen25VLConfig:
        return dataclasses.replace(self, **changes)

    # ---- presets -------------------------------------------------------------------------------------------------
    # Shapes from the official Qwen/Qwen2.5-VL-{3B,7B,32B,72B}-Instruct config.json files.

    @classmethod
    def tiny(cls, tie_word_embeddings: bool = False) -> Qwen25VLConfig:
        """A few-MB model for tests and the CPU demo, with the real vocabulary ids of the Qwen special tokens."""
        return cls(
            vision=VisionConfig(
                depth=2,
                hidden_size=32,
                intermediate_size=64,
                num_heads=2,
                out_hidden_size=64,
                window_size=56,
                fullatt_block_indexes=(1,),
            ),
            text=TextConfig(
                vocab_size=151936,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=4096,
                mrope_section=(2, 3, 3),
                max_window_layers=2,
            ),
            tie_word_embeddings=tie_word_embeddings,
        )

    @classmethod
    def qwen2_5_vl_3b(cls) -> Qwen25VLConfig:
        return cls(
            vision=VisionConfig(out_hidden_size=2048, intermediate_size=3420),
            text=TextConfig(
                vocab_size=151936,
                hidden_size=2048,
                intermediate_size=11008,
                num_hidden_layers=36,
                num_attention_heads=16,
                num_key_value_heads=2,
                max_window_layers=70,
            ),
            tie_word_embeddings=True,
        )

    @classmethod
    def qwen2_5_vl_7b(cls) -> Qwen25VLConfig:
        return cls(
            vision=VisionConfig(out_hidden_size=3584, intermediate_size=3420),
            text=TextConfig(
                vocab_size=152064,
                hidden_size=3584,
                intermediate_size=18944,
                num_hidden_layers=28,
                num_attention_heads=28,
                num_key_value_heads=4,
                max_window_layers=28,
            ),
        )

    @classmethod
    def qwen2_5_vl_32b(cls) -> Qwen25VLConfig:
        return cls(
            vision=VisionConfig(out_hidden_size=5120, intermediate_size=3456),
            text=TextConfig(
                vocab_size=152064,
                hidden_size=5120,
                intermediate_size=27648,
                num_hidden_layers=64,
                num_attention_heads=40,
                num_key_value_heads=8,
                max_window_layers=64,
            ),
        )

    @classmethod
    def qwen2_5_vl_72b(cls) -> Qwen25VLConfig:
        return cls(
            vision=VisionConfig(out_hidden_size=8192, intermediate_size=3456),
            text=TextConfig(
                vocab_size=152064,
                hidden_size=8192,
                intermediate_size=29568,
                num_hidden_layers=80,
                num_attention_heads=64,
                num_key_value_heads=8,
                max_window_layers=80,
            ),
        )

    @classmethod
    def preset(cls, name: str) -> Qwen25VLConfig:
        """By name: tiny, 3b, 7b, 32b, 72b (also accepts qwen2_5_vl_7b style names)."""
        key = name.lower().removeprefix("qwen2_5_vl_").removeprefix("qwen2.5-vl-")
        table = {
            "tiny": cls.tiny,
            "3b": cls.qwen2_5_vl_3b,
            "7b": cls.qwen2_5_vl_7b,
            "32b": cls.qwen2_5_vl_32b,
            "72b": cls.qwen2_5_vl_72b,
        }
        if key not in table:
            raise ValueError(f"unknown Qwen2.5-VL preset {name!r}; choose one of {sorted(table)}")
        return table[key]()
