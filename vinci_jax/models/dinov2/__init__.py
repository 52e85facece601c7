"""DINOv2 (HF Dinov2Model / Dinov2WithRegistersModel) in Flax NNX."""

from vinci_jax.models.dinov2.config import Dinov2Config
from vinci_jax.models.dinov2.interpolate import bicubic_matrix
from vinci_jax.models.dinov2.modeling import Dinov2Model

__all__ = ["Dinov2Config", "Dinov2Model", "bicubic_matrix"]
