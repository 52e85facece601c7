"""Registry from a config's `job` name to the function that runs it.

Jobs are imported lazily so that `launch` starts fast and a job that is not built yet fails with a clear message
instead of an ImportError deep inside another module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import ml_collections

JobFn = Callable[[ml_collections.ConfigDict], None]

# job name -> (module, function, the issue that builds it)
JOBS: dict[str, tuple[str, str, str]] = {
    "demo": ("vinci_jax.demo", "run", "#2"),
    "sft": ("vinci_jax.train.sft", "run", "#7"),
    "virl": ("vinci_jax.rl.virl", "run", "#9"),
}


class JobNotAvailable(RuntimeError):
    """The config names a job that does not exist or is not built yet."""


def resolve(job: str) -> JobFn:
    """The run function for `job`, or JobNotAvailable saying why it cannot run."""
    if job not in JOBS:
        raise JobNotAvailable(f"unknown job {job!r}; known jobs: {', '.join(sorted(JOBS))}")
    module_name, fn_name, issue = JOBS[job]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            raise JobNotAvailable(
                f"job {job!r} is not implemented yet ({module_name} does not exist; tracked in issue {issue})"
            ) from err
        raise
    return getattr(module, fn_name)
