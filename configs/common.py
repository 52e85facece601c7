"""Config blocks shared by every job config (mesh, checkpointing, logging).

Each `configs/<job>.py` builds its ConfigDict from these so that a knob has one name everywhere and every knob is
reachable from the command line as `--config.a.b=value`.
"""

from __future__ import annotations

import ml_collections


def mesh_config(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
    """Mesh shape over the axes (data, fsdp, tensor); one axis may be -1 to take the remaining devices."""
    return ml_collections.ConfigDict({"data": data, "fsdp": fsdp, "tensor": tensor})


# --config.model.attention: the attention kernels of the decoder, the vision tower and DINOv2
# (vinci_jax/models/attention.py). auto = splash on TPU, cudnn on GPU, xla on CPU; xla is the reference path and
# materialises [B, heads, L, L] scores; splash (TPU Pallas, segment ids, O(L) memory) is a TPU-only kernel; cudnn is
# GPU flash attention (the Pallas GPU kernel where segment ids are needed).
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "splash", "cudnn")
DEFAULT_ATTENTION = "auto"
POD_ATTENTION = "splash"  # the 7B/8B presets run on TPU pods: no [L, L] buffer at the released lengths

# --config.model.scan_layers: run the decoder layers, the vision blocks and DINOv2's layers as one jax.lax.scan body
# each (vinci_jax/models/layers.py:scan_layers), so compile time stays flat in depth. Weights stay stored per layer
# (checkpoints, HF names and sharding rules are unchanged); the scan stacks them inside the program. Off for the tiny
# / demo models (2-4 layers: nothing to save in compile time, and the Python loop is the reference path), on in the
# pod presets (28-64 layers).
DEFAULT_SCAN_LAYERS = False
POD_SCAN_LAYERS = True


def base_config(job: str) -> ml_collections.ConfigDict:
    """Fields every job has: what to run, where it writes, how long, the seed and the mesh."""
    config = ml_collections.ConfigDict()
    config.job = job
    config.workdir = f"/tmp/vinci_jax/{job}"
    config.num_steps = 10
    config.seed = 0
    config.mesh = mesh_config()
    return config


def parse_preset(arg: str | None, presets: tuple[str, ...], default: str) -> str:
    """The preset named after the colon in `--config configs/x.py:preset`, validated against the known ones."""
    name = arg or default
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(presets)}")
    return name
