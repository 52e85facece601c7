"""RewardConfig: every knob of the visual reward as one frozen dataclass (filled from an ml_collections config).

Defaults reproduce the released VinciCoder reward: R = 0.9 * visual + 0.1 * format, visual = mean over all crops
of (1 + cos(DINOv2 CLS before the final LayerNorm)) / 2, alignment folded into the format term, fp32.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections

ENCODER_DINOV2 = "dinov2"
ENCODER_OFFLINE = "offline-msssim-hist"  # weight-free similarity; never a random DINOv2
ENCODERS = (ENCODER_DINOV2, ENCODER_OFFLINE)
FEATURES = ("cls_pre_ln", "cls_post_ln")
DTYPES = ("float32", "bfloat16")
TERMS = ("visual", "format", "alignment")


@dataclasses.dataclass(frozen=True)
class RewardConfig:
    """Knobs of the visual reward; see the module docstring for the released defaults."""

    encoder: str = ENCODER_DINOV2
    encoder_path: str | None = None  # local HF Dinov2Model directory (e.g. a copy of facebook/dinov2-large)
    feature: str = "cls_pre_ln"
    compute_dtype: str = "float32"
    tile_size: int = 448
    max_tiles: int = 12  # crop cap: at most this many grid tiles (+1 coarse thumbnail)
    use_thumbnail: bool = True
    coarse_weight: float | None = None  # None and None: plain mean over all crops (released)
    fine_weight: float | None = None
    term_weights: tuple[tuple[str, float], ...] = (("visual", 0.9), ("format", 0.1))
    fold_alignment_into_format: bool = True  # released: the code block must be in the prompt's language
    max_render_pixels: int = 83_000_000
    crop_buckets: tuple[int, ...] = (4, 8, 16, 32, 64)  # padded batch sizes of the encoder; bigger work is chunked
    host_threads: int = 4  # threads for PIL decoding-free work (resize + tiling) on the host

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"reward encoder {self.encoder!r} unknown; choose one of {ENCODERS}")
        if self.feature not in FEATURES:
            raise ValueError(f"reward feature {self.feature!r} unknown; choose one of {FEATURES}")
        if self.compute_dtype not in DTYPES:
            raise ValueError(f"reward compute_dtype {self.compute_dtype!r} unknown; choose one of {DTYPES}")
        for name, _ in self.term_weights:
            if name not in TERMS:
                raise ValueError(f"reward term {name!r} unknown; choose among {TERMS}")
        if not self.crop_buckets or sorted(self.crop_buckets) != list(self.crop_buckets):
            raise ValueError(f"crop_buckets must be a non-empty increasing tuple, got {self.crop_buckets}")
        if self.max_tiles < 1:
            raise ValueError(f"max_tiles must be >= 1, got {self.max_tiles}")

    @property
    def weights(self) -> dict[str, float]:
        return dict(self.term_weights)

    @property
    def post_layernorm(self) -> bool:
        return self.feature == "cls_post_ln"

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict | Mapping[str, Any]) -> RewardConfig:
        """From a ConfigDict / dict with the same field names; term_weights may be a {name: weight} dict."""
        raw = dict(config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config)
        unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown reward config keys {sorted(unknown)}")
        if isinstance(raw.get("term_weights"), Mapping):
            raw["term_weights"] = tuple((k, float(v)) for k, v in raw["term_weights"].items())
        elif "term_weights" in raw:
            raw["term_weights"] = tuple((str(k), float(v)) for k, v in raw["term_weights"])
        if "crop_buckets" in raw:
            raw["crop_buckets"] = tuple(int(b) for b in raw["crop_buckets"])
        return cls(**raw)

    def to_config(self) -> ml_collections.ConfigDict:
        """A ConfigDict for configs/*.py (every knob reachable as --config.reward.<name>=...)."""
        out = dataclasses.asdict(self)
        out["term_weights"] = dict(self.term_weights)
        out["crop_buckets"] = list(self.crop_buckets)
        # None-valued fields must have a type for command-line overrides.
        placeholders = {"encoder_path": str, "coarse_weight": float, "fine_weight": float}
        return ml_collections.ConfigDict(
            {
                k: (
                    ml_collections.FieldReference(None, field_type=placeholders[k])
                    if v is None and k in placeholders
                    else v
                )
                for k, v in out.items()
            }
        )
