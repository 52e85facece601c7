"""The ViRL visual reward: tiling, DINOv2 (or weight-free) crop features on the device, named weighted terms."""

from vinci_jax.reward.config import ENCODER_DINOV2, ENCODER_OFFLINE, RewardConfig
from vinci_jax.reward.encoders import Dinov2Encoder, OfflineEncoder, build_encoder
from vinci_jax.reward.tiling import choose_grid, num_crops, tile_image
from vinci_jax.reward.visual import RewardBatch, VisualReward

__all__ = [
    "ENCODER_DINOV2",
    "ENCODER_OFFLINE",
    "Dinov2Encoder",
    "OfflineEncoder",
    "RewardBatch",
    "RewardConfig",
    "VisualReward",
    "build_encoder",
    "choose_grid",
    "num_crops",
    "tile_image",
]
