"""The embedded default run of `make demo`: everything built so far, end to end, on one CPU.

Presets: `cpu` (default). The demo runs its stages in order and fails loudly on the first error.
"""

from __future__ import annotations

import ml_collections

from configs import common

PRESETS = ("cpu",)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    common.parse_preset(arg, PRESETS, "cpu")
    config = common.base_config("demo")
    config.workdir = "/tmp/vinci_jax/demo"
    # Stages run in order; each one is a real part of the system exercised on tiny data.
    config.stages = "env"
    return config
