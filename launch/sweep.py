"""Expand `--sweep key=v1,v2` flags into the cartesian product of named runs, and run or dispatch them.

`python -m launch.sweep --config configs/virl.py --sweep 'config.optim.lr=1e-6,3e-6' --sweep 'config.rollout.n=8,16'`
gives four runs, each with its own name and workdir. `--mode local` runs them one after another on this machine,
`--mode print` prints the launcher command of each, `--mode tpu` prints (or, without --dry_run, runs) the
`launch.tpu_vm run` command of each on a Cloud TPU VM.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from launch import tpu_vm


@dataclass(frozen=True)
class SweepAxis:
    key: str  # a config path, with or without the leading "config."
    values: tuple[str, ...]

    @property
    def flag(self) -> str:
        return self.key if self.key.startswith("config.") else f"config.{self.key}"


@dataclass(frozen=True)
class Run:
    name: str
    workdir: str
    overrides: tuple[tuple[str, str], ...]  # (flag, value), in axis order

    def launcher_args(self, config: str, extra: tuple[str, ...] = ()) -> list[str]:
        args = ["-m", "vinci_jax.launch", "--config", config, f"--config.workdir={self.workdir}"]
        args += [f"--{flag}={value}" for flag, value in self.overrides]
        return args + list(extra)


def parse_axis(spec: str) -> SweepAxis:
    """'config.optim.lr=1e-6,3e-6' -> SweepAxis; a malformed spec names itself in the error."""
    key, sep, values = spec.partition("=")
    parsed = tuple(v.strip() for v in values.split(",") if v.strip())
    if not sep or not key.strip() or not parsed:
        raise ValueError(f"bad --sweep {spec!r}: expected KEY=V1,V2,... e.g. config.optim.lr=1e-6,3e-6")
    return SweepAxis(key.strip(), parsed)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+=-]+", "_", text).strip("_")


def expand(config: str, axes: list[SweepAxis], workdir_root: str, prefix: str | None = None) -> list[Run]:
    """Every combination of the axes' values as a Run named after the config and the swept values."""
    keys = [axis.flag for axis in axes]
    if len(set(keys)) != len(keys):
        raise ValueError(f"a key is swept twice: {keys}")
    stem = prefix or Path(config.split(":")[0]).stem + (f"-{config.split(':')[1]}" if ":" in config else "")
    runs = []
    for combo in itertools.product(*(axis.values for axis in axes)):
        parts = [f"{key.rsplit('.', 1)[-1]}={value}" for key, value in zip(keys, combo, strict=True)]
        name = _slug("-".join([stem, *parts]))
        runs.append(Run(name, str(Path(workdir_root) / name), tuple(zip(keys, combo, strict=True))))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launch.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="configs/X.py[:preset]")
    parser.add_argument("--sweep", action="append", default=[], help="KEY=V1,V2,... (repeatable; product taken)")
    parser.add_argument("--workdir_root", default="/tmp/vinci_jax/sweeps", help="each run writes to ROOT/<name>")
    parser.add_argument("--name", default=None, help="prefix of run names (default: config file stem)")
    parser.add_argument("--mode", choices=("local", "print", "tpu"), default="print")
    parser.add_argument("--keep_going", action="store_true", help="local mode: continue after a failed run")
    parser.add_argument("--dry_run", action="store_true", help="tpu mode: print the commands, run nothing")
    parser.add_argument("--tpu_name", default=None, help="tpu mode: the TPU VM to run on")
    parser.add_argument("--zone", default=None, help="tpu mode: its zone")
    parser.add_argument("--project", default=None, help="tpu mode: its GCP project")
    parser.add_argument("extra", nargs="*", help="more launcher flags for every run (after --)")
    args = parser.parse_args(argv)

    try:
        runs = expand(args.config, [parse_axis(s) for s in args.sweep], args.workdir_root, args.name)
    except ValueError as err:
        parser.error(str(err))
    extra = tuple(args.extra)
    if args.mode == "print":
        for run in runs:
            print(shlex.join(["python", *run.launcher_args(args.config, extra)]))
        return 0
    if args.mode == "tpu":
        if not (args.tpu_name and args.zone):
            parser.error("--mode tpu needs --tpu_name and --zone")
        for run in runs:
            launcher = shlex.join(["python3", *run.launcher_args(args.config, extra), "--distributed=on"])
            tpu_args = ["run", "--name", args.tpu_name, "--zone", args.zone, "--log", f"{run.name}.log"]
            tpu_args += ["--project", args.project] if args.project else []
            tpu_args += ["--dry_run"] if args.dry_run else []
            code = tpu_vm.main([*tpu_args, "--", launcher])
            if code and not args.keep_going:
                return code
        return 0

    Path(args.workdir_root).mkdir(parents=True, exist_ok=True)
    summary = []
    for run in runs:
        print(f"[sweep] {run.name}", flush=True)
        code = subprocess.run([sys.executable, *run.launcher_args(args.config, extra)]).returncode
        summary.append({"name": run.name, "workdir": run.workdir, "overrides": dict(run.overrides), "returncode": code})
        if code and not args.keep_going:
            break
    (Path(args.workdir_root) / "sweep.json").write_text(json.dumps(summary, indent=1))
    failed = [s["name"] for s in summary if s["returncode"]]
    print(f"[sweep] {len(summary) - len(failed)}/{len(runs)} runs ok" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed or len(summary) < len(runs) else 0


if __name__ == "__main__":
    sys.exit(main())
