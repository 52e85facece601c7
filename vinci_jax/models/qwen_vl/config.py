"""The config.json handling both Qwen-VL families share: the top-level config (vision + text + special-token ids),
reading the fields that have the same name and meaning in both families, and the rope block in either layout.

Field names are the HF ones, so reading a field is `d.get(name, default)` cast to the default's type; a family's
config reads its own fields (DeepStack indexes, window sizes, q/k norm options) beside `hf_fields`' result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

VISION_ROPE_THETA = 10000.0

# Fields both families' text configs read and write the same way (the rope block and the token ids aside).
TEXT_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "hidden_act",
    "max_position_embeddings", "rms_norm_eps", "initializer_range",
)  # fmt: skip
# ... and both vision configs (rope_theta aside).
VISION_FIELDS = (
    "depth", "hidden_size", "hidden_act", "intermediate_size", "num_heads", "in_channels", "patch_size",
    "spatial_merge_size", "temporal_patch_size", "out_hidden_size", "initializer_range",
)  # fmt: skip


def hf_fields(
    cls: type, d: Mapping[str, Any], names: Iterable[str], aliases: Mapping[str, tuple[str, ...]] | None = None
) -> dict[str, Any]:
    """{name: d[name] (or its first alias present, else `cls`'s default) cast to the default's type}: the plain
    int / float / str / bool fields of a config dataclass."""
    aliases = aliases or {}
    out = {}
    for name in names:
        default = getattr(cls, name)
        keys = (name, *aliases.get(name, ()))
        out[name] = type(default)(next((d[k] for k in keys if k in d), default))
    return out


def fields_to_hf(config: Any, names: Iterable[str]) -> dict[str, Any]:
    return {name: getattr(config, name) for name in names}


def read_rope(d: Mapping[str, Any], default_theta: float, kind: str = "") -> tuple[dict[str, Any], float]:
    """(the rope block of either layout: transformers 5.x `rope_parameters`, or the released `rope_scaling` with
    `rope_theta` beside it; rope_theta). Only default mRoPE exists in these families; another type raises."""
    rope = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
    theta = rope.get("rope_theta", d.get("rope_theta", default_theta))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "mrope"):
        raise NotImplementedError(f"rope_type {rope_type!r} is not supported; only default {kind}mRoPE is")
    return rope, float(theta)


def text_fields_from_hf(cls: type, d: Mapping[str, Any], kind: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """(the text fields both families share, read from a text config dict; its rope block)."""
    rope, theta = read_rope(d, cls.rope_theta, kind)
    fields = hf_fields(cls, d, TEXT_FIELDS)
    fields.update(
        num_key_value_heads=int(d.get("num_key_value_heads") or fields["num_attention_heads"]),
        rope_theta=theta,
        mrope_section=tuple(int(s) for s in rope.get("mrope_section", cls.mrope_section)),
        attention_dropout=float(d.get("attention_dropout", 0.0)),
        bos_token_id=d.get("bos_token_id", cls.bos_token_id),
        eos_token_id=d.get("eos_token_id", cls.eos_token_id),
        pad_token_id=d.get("pad_token_id", cls.pad_token_id),
    )
    return fields, rope


def text_fields_to_hf(config: Any, model_type: str, **rope: Any) -> dict[str, Any]:
    """The text config.json entries both families write (`rope` adds entries to the rope block)."""
    names = (*TEXT_FIELDS, "num_key_value_heads", "attention_dropout", "bos_token_id", "eos_token_id", "pad_token_id")
    return {
        **fields_to_hf(config, names),
        "model_type": model_type,
        "rope_parameters": {
            **rope,
            "mrope_section": list(config.mrope_section),
            "rope_theta": config.rope_theta,
            "rope_type": "default",
        },
        "use_cache": True,
    }


def check_heads(config: Any) -> None:
    """Grouped-query attention needs the query heads to divide into the key/value heads."""
    if config.num_attention_heads % config.num_key_value_heads:
        raise ValueError(
            f"num_attention_heads {config.num_attention_heads} must divide by num_key_value_heads "
            f"{config.num_key_value_heads}"
        )


def vision_fields_from_hf(
    cls: type, d: Mapping[str, Any], aliases: Mapping[str, tuple[str, ...]] | None = None
) -> dict[str, Any]:
    """The vision fields both families share, read from a vision config dict (`aliases`: older key spellings)."""
    rope = d.get("rope_parameters") or {}
    return {**hf_fields(cls, d, VISION_FIELDS, aliases), "rope_theta": float(rope.get("rope_theta", VISION_ROPE_THETA))}


def vision_fields_to_hf(config: Any, model_type: str) -> dict[str, Any]:
    """The vision config.json entries both families write."""
    return {
        **fields_to_hf(config, VISION_FIELDS),
        "model_type": model_type,
        "rope_parameters": {"rope_theta": config.rope_theta, "rope_type": "axial"},
    }


@dataclasses.dataclass(frozen=True)
class QwenVLConfig:
    """vision + text + the special-token ids: the top level of both families' config.json.

    A family's subclass gives `vision` / `text` their config classes (as default factories) and sets the class
    variables; `sizes` maps a preset name to the fields that differ from the defaults ("vision" and "text": the
    keyword arguments of those configs)."""

    vision: Any = None
    text: Any = None
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    tie_word_embeddings: bool = False

    model_type: ClassVar[str]
    architecture: ClassVar[str]  # config.json "architectures"
    display_name: ClassVar[str]  # for messages: "Qwen2.5-VL"
    vision_config_class: ClassVar[type]
    text_config_class: ClassVar[type]
    sizes: ClassVar[Mapping[str, Mapping[str, Any]]]

    def __post_init__(self) -> None:
        if self.vision.out_hidden_size != self.text.hidden_size:
            raise ValueError(
                f"vision.out_hidden_size {self.vision.out_hidden_size} must equal text.hidden_size "
                f"{self.text.hidden_size} (merged image features replace token embeddings)"
            )

    @classmethod
    def text_dict(cls, d: Mapping[str, Any]) -> dict[str, Any]:
        """The text config's entries of a config.json dict (`text_config`)."""
        return dict(d.get("text_config") or {})

    @classmethod
    def from_hf(cls, d: Mapping[str, Any]) -> Any:
        """From a config.json dict of either layout (see the family's config module)."""
        if d.get("model_type", cls.model_type) != cls.model_type:
            raise ValueError(f"config.json has model_type {d.get('model_type')!r}; expected {cls.model_type!r}")
        tie = d.get("tie_word_embeddings")
        if tie is None:
            tie = (d.get("text_config") or {}).get("tie_word_embeddings", False)
        ids = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        return cls(
            vision=cls.vision_config_class.from_hf(d.get("vision_config") or {}),
            text=cls.text_config_class.from_hf(cls.text_dict(d)),
            tie_word_embeddings=bool(tie),
            **hf_fields(cls, d, ids),
        )

    def to_hf(self, dtype: str = "bfloat16") -> dict[str, Any]:
        """config.json content as transformers 5.24 `save_pretrained` writes it; `dtype` names the tensors' dtype."""
        ids = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        return {
            "architectures": [self.architecture],
            "dtype": dtype,
            "model_type": self.model_type,
            "text_config": self.text.to_hf(),
            "tie_word_embeddings": self.tie_word_embeddings,
            "vision_config": self.vision.to_hf(),
            **fields_to_hf(self, ids),
        }

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str) -> Any:
        """A size by name (the keys of `sizes`); `<model_type>_<size>` and `<display name>-<size>` spellings
        (qwen3_vl_8b, qwen2.5-vl-7b) too."""
        key = name.lower().removeprefix(f"{cls.model_type}_").removeprefix(f"{cls.display_name.lower()}-")
        if key not in cls.sizes:
            raise ValueError(f"unknown {cls.display_name} preset {name!r}; choose one of {sorted(cls.sizes)}")
        size = dict(cls.sizes[key])
        vision = cls.vision_config_class(**size.pop("vision", {}))
        return cls(vision=vision, text=cls.text_config_class(**size.pop("text", {})), **size)

    @classmethod
    def tiny(cls, tie_word_embeddings: bool = False) -> Any:
        """A few-MB model for tests and the CPU demo, with the real vocabulary ids of the Qwen special tokens."""
        return cls.preset("tiny").replace(tie_word_embeddings=tie_word_embeddings)
