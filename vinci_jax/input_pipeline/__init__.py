"""Grain input pipelines: SFT (packed multimodal rows) and RL (prompts with target images and group ids)."""

from vinci_jax.input_pipeline.global_batch import make_global_batch
from vinci_jax.input_pipeline.rl import RLBatch, RLConfig, RLLoader
from vinci_jax.input_pipeline.sft import BATCH_FIELDS, SFTConfig, SFTFeaturizer, SFTLoader, vision_inputs_for_batch

__all__ = [
    "BATCH_FIELDS",
    "RLBatch",
    "RLConfig",
    "RLLoader",
    "SFTConfig",
    "SFTFeaturizer",
    "SFTLoader",
    "make_global_batch",
    "vision_inputs_for_batch",
]
