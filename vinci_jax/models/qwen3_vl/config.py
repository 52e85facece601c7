"""Qwen3-VL configuration: frozen dataclasses with Hugging Face field names, presets, and config.json I/O.

Field names are transformers' (`Qwen3VLConfig`, `Qwen3VLTextConfig`, `Qwen3VLVisionConfig`), so `from_hf`/`to_hf`
are plain renames (the fields both families share are read and written by `vinci_jax.models.qwen_vl.config`).
`from_hf` reads both layouts found in the wild: the released checkpoints' (transformers 4.57:
`rope_scaling = {"mrope_interleaved": true, "mrope_section": [...]}` and `rope_theta` inside `text_config`) and
transformers 5.x's (`rope_parameters`). `to_hf` writes what transformers 5.24 `save_pretrained` writes.

Preset shapes are those of the official Qwen/Qwen3-VL-{2B,4B,8B,32B}-Instruct config.json files; their parameter
counts are pinned in tests/models/test_qwen3vl_config.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from vinci_jax.models.qwen_vl.config import (
    VISION_ROPE_THETA,
    QwenVLConfig,
    check_heads,
    text_fields_from_hf,
    text_fields_to_hf,
    vision_fields_from_hf,
    vision_fields_to_hf,
)


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
        return cls(
            **vision_fields_from_hf(cls, d),
            num_position_embeddings=int(d.get("num_position_embeddings", cls.num_position_embeddings)),
            deepstack_visual_indexes=tuple(
                int(i) for i in d.get("deepstack_visual_indexes", cls.deepstack_visual_indexes)
            ),
        )

    def to_hf(self) -> dict[str, Any]:
        return {
            **vision_fields_to_hf(self, "qwen3_vl_vision"),
            "deepstack_visual_indexes": list(self.deepstack_visual_indexes),
            "num_position_embeddings": self.num_position_embeddings,
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
        check_heads(self)
        if len(self.mrope_section) != 3 or sum(self.mrope_section) != self.head_dim // 2:
            raise ValueError(f"mrope_section {self.mrope_section} must be 3 numbers summing to head_dim/2")
        if not self.mrope_interleaved:
            raise NotImplementedError(
                "mrope_interleaved=false: transformers' Qwen3-VL always interleaves the mRoPE slots; no released "
                "Qwen3-VL checkpoint uses the chunked layout"
            )

    @classmethod
    def from_hf(cls, d: Mapping[str, Any]) -> Qwen3TextConfig:
        fields, rope = text_fields_from_hf(cls, d, "(interleaved) ")
        return cls(
            **fields,
            head_dim=int(d.get("head_dim") or cls.head_dim),
            mrope_interleaved=bool(rope.get("mrope_interleaved", True)),
            attention_bias=bool(d.get("attention_bias", False)),
        )

    def to_hf(self) -> dict[str, Any]:
        return {
            **text_fields_to_hf(self, "qwen3_vl_text", mrope_interleaved=self.mrope_interleaved),
            "attention_bias": self.attention_bias,
            "head_dim": self.head_dim,
        }


# the vision tower of the 2B and 4B releases
_SMALL_VISION = dict(depth=24, hidden_size=1024, intermediate_size=4096, deepstack_visual_indexes=(5, 11, 17))


@dataclasses.dataclass(frozen=True)
class Qwen3VLConfig(QwenVLConfig):
    vision: Qwen3VisionConfig = dataclasses.field(default_factory=Qwen3VisionConfig)
    text: Qwen3TextConfig = dataclasses.field(default_factory=Qwen3TextConfig)

    model_type = "qwen3_vl"
    architecture = "Qwen3VLForConditionalGeneration"
    display_name = "Qwen3-VL"
    vision_config_class = Qwen3VisionConfig
    text_config_class = Qwen3TextConfig
    # tiny: a few-MB model for tests and the CPU demo; the others: the official Qwen/Qwen3-VL-*-Instruct shapes.
    sizes = {
        "tiny": dict(
            vision=dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                        num_position_embeddings=64, deepstack_visual_indexes=(0, 1)),
            text=dict(vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                      mrope_section=(2, 3, 3)),
        ),
        "2b": dict(
            vision=dict(_SMALL_VISION, out_hidden_size=2048),
            text=dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                      num_key_value_heads=8),
            tie_word_embeddings=True,
        ),
        "4b": dict(
            vision=dict(_SMALL_VISION, out_hidden_size=2560),
            text=dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                      num_key_value_heads=8),
            tie_word_embeddings=True,
        ),
        "8b": dict(
            vision=dict(out_hidden_size=4096),
            text=dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                      num_key_value_heads=8),
        ),
        "32b": dict(
            vision=dict(out_hidden_size=5120),
            text=dict(hidden_size=5120, intermediate_size=25600, num_hidden_layers=64, num_attention_heads=64,
                      num_key_value_heads=8),
        ),
    }  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.vision.deepstack_visual_indexes) > self.text.num_hidden_layers:
            raise ValueError(
                f"{len(self.vision.deepstack_visual_indexes)} deepstack feature levels but only "
                f"{self.text.num_hidden_layers} decoder layers to add them to"
            )


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
