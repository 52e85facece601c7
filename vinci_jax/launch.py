"""Entry point: `python -m vinci_jax.launch --config configs/X.py[:preset] [--config.a.b=value ...]`.

Prints the resolved config and the JAX devices, joins a multi-process run when asked, then runs the job the config
names (see `vinci_jax.jobs`).
"""

from __future__ import annotations

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a configs/*.py file, optionally with ':preset'.", lock_config=True
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 for a multi-process run outside Cloud TPU."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed",
    "auto",
    ["auto", "on", "off"],
    "Initialise jax.distributed: 'auto' does so on Cloud TPU pods and when --coordinator_address is given.",
)
flags.mark_flag_as_required("config")


def _maybe_initialize_distributed() -> None:
    """Join the multi-controller runtime before any JAX computation, when this run spans several processes."""
    import jax

    mode = _DISTRIBUTED.value
    if mode == "off":
        return
    if _COORDINATOR.value is not None:
        # CPU devices of different processes talk through gloo (no effect on TPU/GPU backends).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
        )
    elif mode == "on":
        jax.distributed.initialize()  # Cloud TPU / SLURM / MPI environments fill the rest in.


def describe_runtime() -> str:
    """One block of text naming the backend, the devices and this process's place among the processes."""
    import jax

    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    return (
        f"JAX {jax.__version__} backend={jax.default_backend()} process {jax.process_index()}/"
        f"{jax.process_count()} devices={len(devices)} (local {jax.local_device_count()}) kinds={kinds}"
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from vinci_jax import jobs

    config = _CONFIG.value
    _maybe_initialize_distributed()
    print("resolved config:\n" + str(config), flush=True)
    print(describe_runtime(), flush=True)
    try:
        run = jobs.resolve(config.job)
    except jobs.JobNotAvailable as err:
        logging.error("%s", err)
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    run(config)


def run() -> None:
    """Console-script entry (`vinci-launch`)."""
    app.run(main)


if __name__ == "__main__":
    run()
