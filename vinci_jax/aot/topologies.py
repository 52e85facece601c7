"""The Cloud TPU slices the AOT tool compiles for: chips, HBM per chip, peak bf16 FLOP/s and HBM bandwidth.

Per-chip figures are Google's published specifications (one table, one source per generation):
  v4   https://cloud.google.com/tpu/docs/v4    32 GiB HBM2, 275 TFLOP/s bf16, 1,200 GB/s
  v5e  https://cloud.google.com/tpu/docs/v5e   16 GiB HBM2, 197 TFLOP/s bf16,   819 GB/s
  v5p  https://cloud.google.com/tpu/docs/v5p   95 GiB HBM2e, 459 TFLOP/s bf16, 2,765 GB/s
  v6e  https://cloud.google.com/tpu/docs/v6e   32 GiB HBM, 918 TFLOP/s bf16,  1,640 GB/s
Slice names follow Cloud TPU accelerator types: v4-N and v5p-N count TensorCores (2 per chip), v5e-N and v6e-N
count chips. A topology string such as "v5e:2x2" is accepted too when its shape is one of the table's.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    generation: str  # as in libtpu topology names: v4, v5e, v5p, v6e
    hbm_bytes: int
    peak_bf16_flops: float
    hbm_bytes_per_s: float
    cores_in_name: int  # TensorCores per chip counted by the accelerator-type name (v4-8 = 4 chips)
    source: str


CHIPS: dict[str, Chip] = {
    "v4": Chip("v4", 32 * GIB, 275e12, 1.2e12, 2, "https://cloud.google.com/tpu/docs/v4"),
    "v5e": Chip("v5e", 16 * GIB, 197e12, 819e9, 1, "https://cloud.google.com/tpu/docs/v5e"),
    "v5p": Chip("v5p", 95 * GIB, 459e12, 2765e9, 2, "https://cloud.google.com/tpu/docs/v5p"),
    "v6e": Chip("v6e", 32 * GIB, 918e12, 1640e9, 1, "https://cloud.google.com/tpu/docs/v6e"),
}

# chip grids per generation (2-D tori for v5e / v6e, 3-D for v4 / v5p)
_SHAPES: dict[str, tuple[tuple[int, ...], ...]] = {
    "v5e": ((2, 2), (2, 4), (4, 4), (4, 8), (8, 8), (8, 16), (16, 16)),
    "v6e": ((2, 2), (2, 4), (4, 4), (4, 8), (8, 8), (8, 16), (16, 16)),
    "v4": ((2, 2, 1), (2, 2, 2), (2, 2, 4), (2, 4, 4), (4, 4, 4), (4, 4, 8), (4, 8, 8)),
    "v5p": ((2, 2, 1), (2, 2, 2), (2, 2, 4), (2, 4, 4), (4, 4, 4), (4, 4, 8), (4, 8, 8)),
}


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str  # the accelerator type, e.g. v5p-64
    chip: Chip
    shape: tuple[int, ...]

    @property
    def chips(self) -> int:
        return math.prod(self.shape)

    @property
    def topology_name(self) -> str:
        """libtpu's name: generation:AxB[xC]."""
        return f"{self.chip.generation}:{'x'.join(map(str, self.shape))}"


def _table() -> dict[str, Topology]:
    out = {}
    for generation, shapes in _SHAPES.items():
        chip = CHIPS[generation]
        for shape in shapes:
            name = f"{generation}-{math.prod(shape) * chip.cores_in_name}"
            out[name] = Topology(name, chip, shape)
    return out


TOPOLOGIES: dict[str, Topology] = _table()


def lookup(name: str) -> Topology:
    """A slice by accelerator type ("v5p-64") or libtpu topology name ("v5p:2x4x4"); unknown names list the known."""
    if name in TOPOLOGIES:
        return TOPOLOGIES[name]
    for topology in TOPOLOGIES.values():
        if topology.topology_name == name:
            return topology
    known = ", ".join(TOPOLOGIES)
    raise KeyError(f"unknown topology {name!r}; known topologies: {known} (or their libtpu names, e.g. v5e:2x2)")


def topology_devices(topology: Topology) -> list[Any]:
    """TPU devices of `topology` that JAX can compile for on a CPU host (needs libtpu: pip install 'jax[tpu]')."""
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # no GCE metadata server here
    # nothing runs on these devices, so compile-only processes need not take libtpu's one-process-per-host lock
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    import jax
    from jax.experimental import topologies

    try:
        desc = topologies.get_topology_desc(
            platform="tpu",
            topology_name=topology.topology_name,
            chip_config_name="default",
            chips_per_host_bounds=(2, 2, 1),
            num_slices=1,
        )
    except Exception as err:  # noqa: BLE001 - libtpu's errors name no remedy
        raise RuntimeError(
            f"cannot describe TPU topology {topology.topology_name} ({err}); compiling for TPU from a CPU host needs "
            f"libtpu matching jax {jax.__version__}: pip install 'jax[tpu]=={jax.__version__}'"
        ) from err
    devices = list(desc.devices)
    if len(devices) != topology.chips:
        raise RuntimeError(f"{topology.name}: libtpu described {len(devices)} devices, expected {topology.chips}")
    return devices
