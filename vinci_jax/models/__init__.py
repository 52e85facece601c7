"""Flax NNX model ports (Qwen2.5-VL, DINOv2, ...); each family lives in its own subpackage."""
