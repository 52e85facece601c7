"""Qwen3-VL configuration: frozen dataclasses with Hugging Face field names, presets, and config.json I/O.

Field names are transformers' (`Qwen3VLConfig`, `Qwen3VLTextConfig`, `Qwen3VLVisionConfig`), so `from_hf`/`to_hf`
are plain renames. `from_hf` reads both layouts found in the wild: the released checkpoints' (transformers 4.57:
`rope_scaling = {"mrope_interleaved": true, "mrope_section": [...]}` and `rope_theta` inside `text_config`) and
transformers 5.x's (`rope_parameters`). `to_hf` writes what transformers 5.24 `save_pretrained` writes.

Preset shapes are those of the official Qwen/Qwen3-VL-{2B,4B,8B,32B}-Instruct config.json files; their parameter
counts are pinned in tests/models/test_qwen3vl_config.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

VISION_ROPE_THETA = 10000.0


@dataclasses.dataclass(frozen=True)
class Qwen3VisionConfig:
    depth: int = 27
    hidden_size: int = 1152
    hidden_act: str = "gelu_pytorch_tanh"
    intermediate_size: int = 4304
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 16
    spatial_merge_size: int = 2
    temporal_patch_size: int = 2
    out_hidden_size: int = 3584
    num_position_embeddings: int = 2304
    deepstack_visual_indexes: tuple[int, ...] = (8, 16, 24)
    initializer_range: float = 0.02
    rope_theta: float = VISION_ROPE_THETA
    layer_norm_eps: float = 1e-6  # hard-coded in HF's vision blocks and mergers, not a config.json field

    def __post_init__(self) -> None:
        side = int(round(self.num_position_embeddings**0.5))
        if side * side != self.num_position_embeddings:
            raise ValueError(
                f"num_position_embeddings {self.num_position_embeddings} must be a square (a grid side**2)"
            )
        bad = [i for i in self.deepstack_visual_indexes if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"deepstack_visual_indexes {bad} are outside 0..{self.depth - 1} (depth {self.depth})")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"vision hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_grid_per_side(self) -> int:
        return int(round(self.num_position_embeddings**0.5))

    @property
    def window_size(self) -> int:
        """One merged unit in pixels. Qwen3-VL has no window attention; with windows of one merged unit the shared
        `prepare_vision_inputs` (Qwen2.5-VL's host-side layout) keeps the processor's patch order, so the same
        bucketed `VisionInputs` (and everything that builds them: sampler, SFT pipeline) serve both families."""
        return self.patch_size * self.spatial_merge_size

    @property
    def tokens_per_second(self) -> int:
        """Unused by Qwen3-VL (videos use timestamp tokens); present for code written against Qwen2.5's config."""
        return 2

    @property
    def fullatt_block_indexes(self) -> tuple[int, ...]:
        return tuple(range(self.depth))

    @classmethod
    def from_hf(cls, d: Mapping[str, Any]) -> Qwen3VisionConfig:
        rope = d.get("rope_parameters") or {}
        return cls(
            depth=int(d.get("depth", cls.depth)),
            hidden_size=int(d.get("hidden_size", cls.hidden_size)),
            hidden_act=str(d.get("hidden_act", cls.hidden_act)),
            intermediate_size=int(d.get("intermediate_size", cls.intermediate_size)),
            num_heads=int(d.get("num_heads", cls.num_heads)),
            in_channels=int(d.get("in_channels", cls.in_channels)),
            patch_size=int(d.get("patch_size", cls.patch_size)),
            spatial_merge_size=int(d.get("spatial_merge_size", cls.spatial_merge_size)),
            temporal_patch_size=int(d.get("temporal_patch_size", cls.temporal_patch_size)),
            out_hidden_size=int(d.get("out_hidden_size", cls.out_hidden_size)),
            num_position_embeddings=int(d.get("num_position_embeddings", cls.num_position_embeddings)),
            deepstack_visual_indexes=tuple(
                int(i) for i in d.get("deepstack_visual_indexes", cls.deepstack_visual_indexes)
            ),
            initializer_range=float(d.get("initializer_range", cls.initializer_range)),
            rope_theta=float(rope.get("rope_theta", VISION_ROPE_THETA)),
        )

    def to_hf(self) -> dict[str, Any]:
        return {
            "deepstack_visual_indexes": list(self.deepstack_visual_indexes),
            "depth": self.depth,
            "hidden_act": self.hidden_act,
            "hidden_size": self.hidden_size,
            "in_channels": self.in_channels,
            "initializer_range": self.initializer_range,
            "intermediate_size": self.intermediate_size,
            "model_type": "qwen3_vl_vision",
            "num_heads": self.num_heads,
            "num_position_embeddings": self.num_position_embeddings,
            "out_hidden_size": self.out_hidden_size,
            "patch_size": self.patch_size,
            "rope_parameters": {"rope_theta": self.rope_theta, "rope_type": "axial"},
            "spatial_merge_size": self.spatial_merge_size,
            "temporal_patch_size": self.temporal_patch_size,
        }


@dataclasses.dataclass(frozen=True)
class Qwen3TextConfig:
    vocab_size: int = 151936
    hidden_size: int = 4096
    intermediate_size: int = 12288
    num_hidden_layers: int = 36
    num_attention_heads: int = 32
    num_key_value_heads: int = 8
    head_dim: int = 128
    hidden_act: str = "silu"
    max_position_embeddings: int = 262144
    rms_norm_eps: float = 1e-6
    rope_theta: float = 5000000.0
    mrope_section: tuple[int, ...] = (24, 20, 20)
    mrope_interleaved: bool = True
    attention_bias: bool = False
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    bos_token_id: int | None = 151643
    eos_token_id: int | None = 151645
    pad_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} must divide by num_key_value_heads "
                f"{self.num_key_value_heads}"
            )
        if len(self.mrope_section) != 3 or sum(self.mrope_section) != self.head_dim // 2:
            raise ValueError(f"mrope_section {self.mrope_section} must be 3 numbers summing to head_dim/2")
        if not self.mrope_interleaved:
            raise NotImplementedError(
                "mrope_interleaved=false: transformers' Qwen3-VL always interleaves the mRoPE slots; no released "
                "Qwen3-VL checkpoint uses the chunked layout"
            )

    @classmethod
    def from_hf(cls, d: Mapping[str, Any]) -> Qwen3TextConfig:
        rope = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
        theta = rope.get("rope_theta", d.get("rope_theta", cls.rope_theta))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", "mrope"):
            raise NotImplementedError(f"rope_type {rope_type!r} is not supported; only default (interleaved) mRoPE is")
        heads = int(d.get("num_attention_heads", cls.num_attention_heads))
        return cls(
            vocab_size=int(d.get("vocab_size", cls.vocab_size)),
            hidden_size=int(d.get("hidden_size", cls.hidden_size)),
            intermediate_size=int(d.get("intermediate_size", cls.intermediate_size)),
            num_hidden_layers=int(d.get("num_hidden_layers", cls.num_hidden_layers)),
            num_attention_heads=heads,
            num_key_value_heads=int(d.get("num_key_value_heads") or heads),
            head_dim=int(d.get("head_dim") or cls.head_dim),
            hidden_act=str(d.get("hidden_act", cls.hidden_act)),
            max_position_embeddings=int(d.get("max_position_embeddings", cls.max_position_embeddings)),
            rms_norm_eps=float(d.get("rms_norm_eps", cls.rms_norm_eps)),
            rope_theta=float(theta),
            mrope_section=tuple(int(s) for s in rope.get("mrope_section", cls.mrope_section)),
            mrope_interleaved=bool(rope.get("mrope_interleaved", True)),
            attention_bias=bool(d.get("attention_bias", False)),
            attention_dropout=float(d.get("attention_dropout", 0.0)),
            initializer_range=float(d.get("initializer_range", cls.initializer_range)),
            bos_token_id=d.get("bos_token_id", cls.bos_token_id),
            eos_token_id=d.get("eos_token_id", cls.eos_token_id),
            pad_token_id=d.get("pad_token_id", cls.pad_token_id),
        )

    def to_hf(self) -> dict[str, Any]:
        return {
            "attention_bias": self.attention_bias,
            "attention_dropout": self.attention_dropout,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "head_dim": self.head_dim,
            "hidden_act": self.hidden_act,
            "hidden_size": self.hidden_size,
            "initializer_range": self.initializer_range,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "model_type": "qwen3_vl_text",
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "num_key_value_heads": self.num_key_value_heads,
            "pad_token_id": self.pad_token_id,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_parameters": {
                "mrope_interleaved": self.mrope_interleaved,
                "mrope_section": list(self.mrope_section),
                "rope_theta": self.rope_theta,
                "rope_type": "default",
            },
            "use_cache": True,
            "vocab_size": self.vocab_size,
        }


@dataclasses.dataclass(frozen=True)
class Qwen3VLConfig:
    vision: Qwen3VisionConfig = dataclasses.field(default_factory=Qwen3VisionConfig)
    text: Qwen3TextConfig = dataclasses.field(default_factory=Qwen3TextConfig)
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    tie_word_embeddings: bool = False

    model_type = "qwen3_vl"

    def __post_init__(self) -> None:
        if self.vision.out_hidden_size != self.text.hidden_size:
            raise ValueError(
                f"vision.out_hidden_size {self.vision.out_hidden_size} must equal text.hidden_size "
                f"{self.text.hidden_size} (merged image features replace token embeddings)"
            )
        if len(self.vision.deepstack_visual_indexes) > self.text.num_hidden_layers:
            raise ValueError(
                f"{len(self.vision.deepstack_visual_indexes)} deepstack feature levels but only "
                f"{self.text.num_hidden_layers} decoder layers to add them to"
            )

    @classmethod
    def from_hf(cls, d: Mapping[str, Any]) -> Qwen3VLConfig:
        """From a config.json dict of either layout (see module docstring)."""
        if d.get("model_type", "qwen3_vl") != "qwen3_vl":
            raise ValueError(f"config.json has model_type {d.get('model_type')!r}; expected 'qwen3_vl'")
        text = dict(d.get("text_config") or {})
        tie = d.get("tie_word_embeddings")
        if tie is None:
            tie = text.get("tie_word_embeddings", False)
        return cls(
            vision=Qwen3VisionConfig.from_hf(d.get("vision_config") or {}),
            text=Qwen3TextConfig.from_hf(text),
            image_token_id=int(d.get("image_token_id", cls.image_token_id)),
            video_token_id=int(d.get("video_token_id", cls.video_token_id)),
            vision_start_token_id=int(d.get("vision_start_token_id", cls.vision_start_token_id)),
            vision_end_token_id=int(d.get("vision_end_token_id", cls.vision_end_token_id)),
            tie_word_embeddings=bool(tie),
        )

    def to_hf(self, dtype: str = "bfloat16") -> dict[str, Any]:
        """config.json content as transformers 5.24 `save_pretrained` writes it; `dtype` names the tensors' dtype."""
        return {
            "architectures": ["Qwen3VLForConditionalGeneration"],
            "dtype": dtype,
            "image_token_id": self.image_token_id,
            "model_type": "qwen3_vl",
            "text_config": self.text.to_hf(),
            "tie_word_embeddings": self.tie_word_embeddings,
            "video_token_id": self.video_token_id,
            "vision_config": self.vision.to_hf(),
            "vision_end_token_id": self.vision_end_token_id,
            "vision_start_token_id": self.vision_start_token_id,
        }

    def replace(self, **changes: Any) -> Qwen3VLConfig:
        return dataclasses.replace(self, **changes)

    # ---- presets -------------------------------------------------------------------------------------------------

    @classmethod
    def tiny(cls, tie_word_embeddings: bool = False) -> Qwen3VLConfig:
        """A few-MB model for tests and the CPU demo, with the real vocabulary ids of the Qwen special tokens."""
        return cls(
            vision=Qwen3VisionConfig(
                depth=3,
                hidden_size=32,
                intermediate_size=64,
                num_heads=2,
                out_hidden_size=64,
                num_position_embeddings=64,
                deepstack_visual_indexes=(0, 1),
            ),
            text=Qwen3TextConfig(
                vocab_size=151936,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=16,
                max_position_embeddings=4096,
                mrope_section=(2, 3, 3),
            ),
            tie_word_embeddings=tie_word_embeddings,
        )

    @classmethod
    def qwen3_vl_2b(cls) -> Qwen3VLConfig:
        return cls(
            vision=Qwen3VisionConfig(
                depth=24, hidden_size=1024, intermediate_size=4096, out_hidden_size=2048,
                deepstack_visual_indexes=(5, 11, 17),
            ),
            text=Qwen3TextConfig(
                hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                num_key_value_heads=8,
            ),
            tie_word_embeddings=True,
        )  # fmt: skip

    @classmethod
    def qwen3_vl_4b(cls) -> Qwen3VLConfig:
        return cls(
            vision=Qwen3VisionConfig(
                depth=24, hidden_size=1024, intermediate_size=4096, out_hidden_size=2560,
                deepstack_visual_indexes=(5, 11, 17),
            ),
            text=Qwen3TextConfig(
                hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                num_key_value_heads=8,
            ),
            tie_word_embeddings=True,
        )  # fmt: skip

    @classmethod
    def qwen3_vl_8b(cls) -> Qwen3VLConfig:
        return cls(
            vision=Qwen3VisionConfig(out_hidden_size=4096),
            text=Qwen3TextConfig(
                hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                num_key_value_heads=8,
            ),
        )  # fmt: skip

    @classmethod
    def qwen3_vl_32b(cls) -> Qwen3VLConfig:
        return cls(
            vision=Qwen3VisionConfig(out_hidden_size=5120),
            text=Qwen3TextConfig(
                hidden_size=5120, intermediate_size=25600, num_hidden_layers=64, num_attention_heads=64,
                num_key_value_heads=8,
            ),
        )  # fmt: skip

    @classmethod
    def preset(cls, name: str) -> Qwen3VLConfig:
        """By name: tiny, 2b, 4b, 8b, 32b (also accepts qwen3_vl_8b style names)."""
        key = name.lower().removeprefix("qwen3_vl_").removeprefix("qwen3-vl-")
        table = {"tiny": cls.tiny, "2b": cls.qwen3_vl_2b, "4b": cls.qwen3_vl_4b, "8b": cls.qwen3_vl_8b,
                 "32b": cls.qwen3_vl_32b}  # fmt: skip
        if key not in table:
            raise ValueError(f"unknown Qwen3-VL preset {name!r}; choose one of {sorted(table)}")
        return table[key]()


def parameter_count(config: Qwen3VLConfig) -> dict[str, int]:
    """Parameters of the vision tower (incl. mergers), the text model and the LM head, from shapes alone."""
    v, t = config.vision, config.text
    patch = v.in_channels * v.temporal_patch_size * v.patch_size**2
    block = 4 * v.hidden_size + 3 * v.hidden_size**2 + 3 * v.hidden_size + v.hidden_size**2 + v.hidden_size
    block += 2 * v.hidden_size * v.intermediate_size + v.intermediate_size + v.hidden_size
    merged = v.hidden_size * v.spatial_merge_size**2

    def merger(norm: int) -> int:
        return 2 * norm + merged * merged + merged + merged * v.out_hidden_size + v.out_hidden_size

    vision = patch * v.hidden_size + v.hidden_size + v.num_position_embeddings * v.hidden_size + v.depth * block
    vision += merger(v.hidden_size) + len(v.deepstack_visual_indexes) * merger(merged)
    q, kv = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
    bias = (q + 2 * kv + t.hidden_size) if t.attention_bias else 0
    layer = t.hidden_size * (q + 2 * kv) + q * t.hidden_size + bias + 2 * t.head_dim
    layer += 3 * t.hidden_size * t.intermediate_size + 2 * t.hidden_size
    text = t.vocab_size * t.hidden_size + t.num_hidden_layers * layer + t.hidden_size
    head = 0 if config.tie_word_embeddings else t.vocab_size * t.hidden_size
    return {"vision": vision, "text": text, "lm_head": head, "total": vision + text + head}
