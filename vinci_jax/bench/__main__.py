"""Dispatch `python -m vinci_jax.bench <name> ...` to the module `vinci_jax.bench.<name>`."""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m vinci_jax.bench <name> [flags]; benchmarks: {', '.join(names)}")
        return
    name, rest = argv[0], argv[1:]
    if name not in names:
        raise SystemExit(f"unknown benchmark {name!r}; choose one of {', '.join(names)}")
    result = importlib.import_module(f"vinci_jax.bench.{name}").main(rest)
    if result is not None:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
