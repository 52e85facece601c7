"""Hugging Face interop: safetensors <-> NNX name tables, load, export, and the `check`/`export` CLI."""

from vinci_jax.hf.loader import (
    CONV,
    IDENTITY,
    LINEAR,
    CheckpointMismatch,
    Rule,
    Transform,
    iter_hf_tensors,
    load_model,
    write_safetensors,
)

__all__ = [
    "CONV",
    "IDENTITY",
    "LINEAR",
    "CheckpointMismatch",
    "Rule",
    "Transform",
    "iter_hf_tensors",
    "load_model",
    "write_safetensors",
]
