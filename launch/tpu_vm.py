"""Cloud TPU VM lifecycle for multi-host runs: create, set up every worker, run one command on all, logs, delete.

Every step is a `gcloud` command run from this machine; `--dry_run` prints each command instead of running it, so
the whole flow can be reviewed (or pasted) before it costs anything:

  python -m launch.tpu_vm create --name vj --zone us-east5-a --accelerator v5p-32 --queued --spot --dry_run
  python -m launch.tpu_vm setup  --name vj --zone us-east5-a --dry_run
  python -m launch.tpu_vm run    --name vj --zone us-east5-a -- python3 -m vinci_jax.launch \
      --config configs/virl.py --distributed=on
  python -m launch.tpu_vm delete --name vj --zone us-east5-a --queued

`run` executes the same command on all workers (`--worker=all`), which is what JAX's multi-controller runtime
expects; on TPU pods `jax.distributed.initialize()` discovers the slice by itself (`--distributed=on`).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

REMOTE_DIR = "~/vinci-jax"
TARBALL = "/tmp/vinci-jax.tar.gz"
TEX_PACKAGES = "texlive-latex-base texlive-latex-extra texlive-pictures poppler-utils"


def _where(args: argparse.Namespace) -> list[str]:
    return [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])


def _ssh(args: argparse.Namespace, command: str) -> list[str]:
    return [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "ssh",
        args.name,
        *_where(args),
        "--worker=all",
        f"--command={command}",
    ]


def create_commands(args: argparse.Namespace) -> list[list[str]]:
    if args.queued:
        create = ["gcloud", "compute", "tpus", "queued-resources", "create", args.name, f"--node-id={args.name}"]
        create += [*_where(args), f"--accelerator-type={args.accelerator}", f"--runtime-version={args.version}"]
        create += ["--spot"] if args.spot else []
        wait = ["gcloud", "compute", "tpus", "queued-resources", "describe", args.name, *_where(args)]
        return [create, [*wait, "--format=value(state.state)"]]
    create = ["gcloud", "compute", "tpus", "tpu-vm", "create", args.name, *_where(args)]
    create += [f"--accelerator-type={args.accelerator}", f"--version={args.version}"]
    return [create + (["--spot"] if args.spot else [])]


def setup_commands(args: argparse.Namespace) -> list[list[str]]:
    """Ship the committed tree (git archive) to every worker, install system packages and the package with [tpu]."""
    archive = ["git", "archive", "--format=tar.gz", f"--output={TARBALL}", args.ref]
    scp = ["gcloud", "compute", "tpus", "tpu-vm", "scp", TARBALL, f"{args.name}:~/", *_where(args), "--worker=all"]
    system = "sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium && "
    system += f"sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends {TEX_PACKAGES}"
    install = (
        f"mkdir -p {REMOTE_DIR} && tar xzf ~/vinci-jax.tar.gz -C {REMOTE_DIR} && cd {REMOTE_DIR} && "
        "python3 -m pip install -q -U pip && python3 -m pip install -q -e '.[tpu]'"
    )
    return [archive, scp, _ssh(args, system), _ssh(args, install)]


def run_commands(args: argparse.Namespace) -> list[list[str]]:
    if not args.command:
        raise ValueError("run needs the command to execute after '--'")
    command = " ".join(args.command)
    return [_ssh(args, f"cd {REMOTE_DIR} && {command} 2>&1 | tee -a ~/{args.log}")]


def logs_commands(args: argparse.Namespace) -> list[list[str]]:
    return [_ssh(args, f"tail -n {args.lines} ~/{args.log}")]


def delete_commands(args: argparse.Namespace) -> list[list[str]]:
    if args.queued:
        return [
            ["gcloud", "compute", "tpus", "queued-resources", "delete", args.name, *_where(args), "--force", "--quiet"]
        ]
    return [["gcloud", "compute", "tpus", "tpu-vm", "delete", args.name, *_where(args), "--quiet"]]


BUILDERS = {
    "create": create_commands,
    "setup": setup_commands,
    "run": run_commands,
    "logs": logs_commands,
    "delete": delete_commands,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m launch.tpu_vm", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    for action in BUILDERS:
        p = sub.add_parser(action)
        p.add_argument("--name", required=True, help="TPU VM (and queued resource) name")
        p.add_argument("--zone", required=True)
        p.add_argument("--project", default=None)
        p.add_argument("--dry_run", action="store_true", help="print every command instead of running it")
        if action in ("create", "delete"):
            p.add_argument("--queued", action="store_true", help="use a queued resource (recommended for pods)")
        if action == "create":
            p.add_argument("--accelerator", required=True, help="e.g. v5p-32, v6e-16")
            p.add_argument("--version", default="v2-alpha-tpuv5", help="TPU runtime / software version")
            p.add_argument("--spot", action="store_true")
        if action == "setup":
            p.add_argument("--ref", default="HEAD", help="git ref whose tree is shipped")
        if action in ("run", "logs"):
            p.add_argument("--log", default="vinci_jax.log", help="log file in each worker's home")
        if action == "logs":
            p.add_argument("--lines", type=int, default=100)
        if action == "run":
            p.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND... run on every worker")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) and args.command[0] == "--":
        args.command = args.command[1:]
    commands = BUILDERS[args.action](args)
    for command in commands:
        print(shlex.join(command), flush=True)
        if not args.dry_run:
            code = subprocess.run(command).returncode
            if code:
                print(f"error: command failed with exit code {code}", file=sys.stderr)
                return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
