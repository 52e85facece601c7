"""`python -m vinci_jax.aot table --out DIR [--cells KEY,...] [--force] [--markdown_only]`: the README's table.

The "Will it fit?" table is a fixed list of cells (job preset x slice, with the depth each compiles at). Each cell
runs `python -m vinci_jax.aot` in its own process, one at a time (a full-depth 8B compile holds a few GiB of host
memory and both cores of a small box; a fresh process returns it), and leaves `DIR/<key>.json`: the tool's report
plus the host's load average around the compile, since compile seconds on a shared box mean little without it.
Cells whose JSON exists are kept unless `--force`, so an interrupted run resumes. `DIR/table.md` is rendered from
every JSON in DIR, in the cells' order. Run it under `nice -n 10` on a shared machine.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Cell:
    """One job preset compiled for one slice."""

    model: str  # for the table: Qwen3-VL-8B, ...
    config: str  # configs/<job>.py:<preset>
    topology: str
    num_layers: str = ""  # "" full depth; "3" compiles 3 and 6; "3,6,9" those
    overrides: tuple[str, ...] = ()  # --config.a.b=v
    programs: tuple[str, ...] = ()  # () all of the job's

    @property
    def job(self) -> str:
        return "ViRL" if "virl.py" in self.config else "SFT"

    @property
    def key(self) -> str:
        preset = self.config.rsplit(":", 1)[-1]
        return f"{self.job.lower()}-{preset}-{self.topology}"

    def load_config(self, root: Path | None = None) -> Any:
        """The cell's config as the tool sees it: the preset with the cell's overrides, parsed by the same
        ml_collections config flag as `python -m vinci_jax.aot --config ... --config.x=y` (no compile)."""
        from absl import flags
        from ml_collections import config_flags

        path, preset = self.config.rsplit(":", 1)
        where = (root or Path(__file__).resolve().parents[2]) / path
        argv = ["table", f"--config={where}:{preset}", *(f"--config.{o}" for o in self.overrides)]
        values = flags.FlagValues()
        config_flags.DEFINE_config_file("config", None, "the cell's job config", flag_values=values, sys_argv=argv)
        values(argv)
        return values.config

    def command(self, json_out: Path) -> list[str]:
        cmd = [sys.executable, "-m", "vinci_jax.aot", "--config", self.config, "--topology", self.topology]
        if self.num_layers:
            cmd += ["--num_layers", self.num_layers]
        if self.programs:
            cmd += ["--programs", ",".join(self.programs)]
        return [*cmd, "--json_out", str(json_out), *(f"--config.{o}" for o in self.overrides)]


_VIRL = (("Qwen3-VL-8B", "configs/virl.py:qwen3_vl_8b"), ("Qwen2.5-VL-7B", "configs/virl.py:qwen2_5_vl_7b"))
_SFT = (
    ("Qwen2.5-VL-7B", "configs/sft.py:qwen2_5_vl_7b"),
    ("Qwen3-VL-8B", "configs/sft.py:qwen3_vl_8b"),
    ("Qwen2.5-VL-32B", "configs/sft.py:qwen2_5_vl_32b"),
)
SLICES = ("v5p-64", "v5e-256", "v6e-64")
# full depth: the pod presets run the decoder as a layer scan (`model.scan_layers`), whose compile time does not grow
# with depth. Without the scan, `--num_layers 3` compiles 3 and 6 layers and extrapolates (Qwen3-VL's DeepStack
# needs 3): an unrolled full-depth 8B compile takes far longer on 2 cores.
DEFAULT_LAYERS = ""
# what a slice other than the presets' own v5p-64 needs so the batch divides its chips. ViRL: the pod presets train on
# shared-prefix rows, one group row (a prompt, its image and its 8 responses) per chip and micro-batch
# (`algo.group_rows`: 32 on v5p-64, 64 on v6e-64, 256 on v5e-256, i.e. 256, 512 or all 2,048 rollouts of a step per
# micro-batch); the presets' 32 rows would be replicated on every chip of a larger slice. `algo.micro_batch_rows`
# (the padded grpo_grad's rollouts, one 24,576-token row a chip: the `--config.algo.row_layout=padded` fallback)
# follows. SFT's 128 rows a step as 2 x 64 on 64 chips, and in one micro-batch over 128 (fsdp) x 2 (tensor) on 256.
# The released batch (256 x 8 rollouts, 128 x 8,192 SFT rows a step) stays. SFT on v6e-64 (31.25 GiB a chip) and
# v5e-256 (15.75 GiB) also recomputes each decoder layer whole (`remat full`): `dots_no_batch` keeps every matmul
# output of a row's 8,192 tokens, 8.1 GiB per MLP matrix over 7B's 28 layers, which alone fills a v6e chip.
SFT_SMALL_HBM = ("model.remat=full",)
SFT_V5E_MESH = ("mesh.fsdp=128", "mesh.tensor=2")


def virl_rows(chips: int) -> tuple[str, ...]:
    """ViRL overrides for one group row (shared prefix) and one padded row per chip of a `chips`-chip slice."""
    return (f"algo.group_rows={chips}", f"algo.micro_batch_rows={chips}")


SLICE_OVERRIDES: dict[tuple[str, str], tuple[str, ...]] = {
    ("ViRL", "v5e-256"): virl_rows(256),
    ("ViRL", "v6e-64"): virl_rows(64),
    ("SFT", "v5e-256"): ("data.global_batch_size=128", "grad_accum_steps=1", *SFT_V5E_MESH, *SFT_SMALL_HBM),
    ("SFT", "v6e-64"): ("data.global_batch_size=64", "grad_accum_steps=2", *SFT_SMALL_HBM),
}
CELLS: tuple[Cell, ...] = tuple(
    Cell(
        model,
        config,
        topology,
        DEFAULT_LAYERS,
        SLICE_OVERRIDES.get(("ViRL" if "virl" in config else "SFT", topology), ()),
    )
    for topology in SLICES
    for model, config in (*_VIRL, *_SFT)
)


def _stream(command: list[str], key: str, timeout_s: float) -> tuple[int, str]:
    """Run one cell's compile, echoing its progress lines ("compiling grpo_grad ...") with the time, so a long
    table run shows which program it is on and how long each took; (exit code or -1 on timeout, output tail)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    timer = threading.Timer(timeout_s, proc.kill)
    timer.start()
    tail: collections.deque[str] = collections.deque(maxlen=60)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line)
            if line.startswith(("compiling ", "DOES NOT FIT")):
                print(f"  {time.strftime('%H:%M:%S')} {key}: {line.rstrip()}", flush=True)
        code = proc.wait()
    finally:
        timed_out = not timer.is_alive()
        timer.cancel()
    text = "".join(tail)[-3000:]
    return (-1, f"timed out after {timeout_s:.0f} s; last output: {text[-1500:]}") if timed_out else (code, text)


def run_cell(cell: Cell, out: Path, timeout_s: float) -> dict[str, Any]:
    """Compile one cell in a child process; its report JSON gains the cell and the host's load."""
    path = out / f"{cell.key}.json"
    load_before, start = os.getloadavg()[0], time.time()
    code, tail = _stream(cell.command(path), cell.key, timeout_s)
    report: dict[str, Any] = json.loads(path.read_text()) if path.exists() and code in (0, 3) else {}
    if not report:  # the tool itself failed (not a program over budget: that is exit 3 with a report)
        report = {"programs": [], "tool_error": f"exit {code}: {tail}"}
    report["cell"] = dataclasses.asdict(cell) | {"key": cell.key, "job": cell.job}
    report["host"] = {"load_before": load_before, "load_after": os.getloadavg()[0], "wall_s": time.time() - start,
                      "cpus": os.cpu_count()}  # fmt: skip
    path.write_text(json.dumps(report, default=str) + "\n")
    return report


def _depth(report: dict[str, Any], row: dict[str, Any]) -> str:
    full = report.get("decoder_layers")
    if not row.get("extrapolated_from_layers"):
        return f"full ({full})" if row["name"] not in ("reward_encoder", "vision_tower") else "full"
    a, b = row["extrapolated_from_layers"]
    text = f"{a}+{b} -> {full}"
    for check in row.get("extrapolation_check", []):
        if check["layers"] not in (a, b):  # the line passes through a and b; other depths check it
            text += f"; at {check['layers']}: {check['measured_gib']:.1f} measured, {check['line_gib']:.1f} line"
    return text


def _mesh(report: dict[str, Any]) -> str:
    """data x fsdp x tensor with the -1 axis resolved to the chips left."""
    sizes = [int(report.get("mesh", {}).get(a, 1)) for a in ("data", "fsdp", "tensor")]
    known = math.prod(s for s in sizes if s != -1)
    return "x".join(str(report.get("chips", 0) // known if s == -1 else s) for s in sizes)


def _largest(row: dict[str, Any]) -> str:
    if not row["largest_temporaries"]:
        return "-"
    top = row["largest_temporaries"][0]
    return f"{top['shape']} {top['bytes'] / GIB:.2f}"


def markdown(reports: Sequence[dict[str, Any]]) -> str:
    """One row per program of every cell: memory per chip against the budget, FLOPs, roofline, depth, compile s."""
    head = ("| job | slice (mesh) | program | GiB per chip | fits 0.9? (headroom) | largest temporary (GiB) "
            "| TFLOP/chip compiled / analytic | roofline s (bound) | MFU <= | depth | compile s (load) |")  # fmt: skip
    lines = [head, "|" + "---|" * 11]
    for report in reports:
        cell = report["cell"]
        where = f"{cell['topology']} ({_mesh(report)})"
        label = f"{cell['job']} {cell['model']}"
        load = f"{report['host']['load_before']:.0f}-{report['host']['load_after']:.0f}"
        if report.get("tool_error"):
            lines.append(f"| {label} | {where} | - | tool failed: {report['tool_error'][-200:]!r} |" + " |" * 7)
            continue
        for row in report["programs"]:
            if row["error"]:
                error = row["error"].replace("|", "/").replace("\n", " ")[:160]
                lines.append(f"| {label} | {where} | {row['name']} | compile failed: {error} | no | - | - | - | - "
                             f"| {_depth(report, row)} | {row['compile_s']:.0f} ({load}) |")  # fmt: skip
                continue
            hbm = row["hbm_bytes"] / GIB
            fits = "yes" if row["fits"] else "**no**"
            mfu = f"{row['mfu_ceiling']:.2f}" if row.get("mfu_ceiling") is not None else "-"
            lines.append(
                f"| {label} | {where} | {row['name']} | {row['total_gib']:.1f} of {hbm:.0f} "
                f"(temp {row['temp_bytes'] / GIB:.1f}) | {fits} ({100 * row['headroom_fraction']:.0f}%) "
                f"| {_largest(row)} | {row['compiled_flops'] / 1e12:.0f} / {row['model_flops'] / 1e12:.0f} "
                f"| {row['roofline_s']:.3g} ({row['roofline_bound']}) | {mfu} | {_depth(report, row)} "
                f"| {row['compile_s']:.0f} ({load}) |"
            )
    return "\n".join(lines) + "\n"


def render(out: Path, cells: Sequence[Cell] = CELLS) -> str:
    """table.md from the JSONs in `out`, in the cells' order (cells not yet compiled are left out)."""
    reports = [json.loads((out / f"{c.key}.json").read_text()) for c in cells if (out / f"{c.key}.json").exists()]
    text = markdown(reports)
    (out / "table.md").write_text(text)
    return text


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m vinci_jax.aot table", description=__doc__.split("\n\n")[1])
    parser.add_argument("--out", required=True, type=Path, help="directory of the per-cell JSON and table.md")
    parser.add_argument("--cells", default="", help="comma-separated cell keys (default: all); --list names them")
    parser.add_argument("--list", action="store_true", help="print the cell keys and exit")
    parser.add_argument("--force", action="store_true", help="recompile cells whose JSON exists")
    parser.add_argument("--markdown_only", action="store_true", help="only render table.md from the JSON there")
    parser.add_argument("--timeout_s", type=float, default=7200.0, help="per cell")
    parser.add_argument("--num_layers", default=None, help="every cell's depths (N, or N,M,K; default: full)")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(f"{c.key}  {' '.join(c.command(Path('OUT')))}" for c in CELLS))
        return 0
    wanted = [k for k in args.cells.split(",") if k]
    unknown = sorted(set(wanted) - {c.key for c in CELLS})
    if unknown:
        print(f"error: unknown cells {unknown}; known: {', '.join(c.key for c in CELLS)}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    cells = CELLS if args.num_layers is None else [dataclasses.replace(c, num_layers=args.num_layers) for c in CELLS]
    if not args.markdown_only:
        for cell in cells:
            if (wanted and cell.key not in wanted) or ((args.out / f"{cell.key}.json").exists() and not args.force):
                continue
            print(f"{cell.key}: {' '.join(cell.command(args.out / (cell.key + '.json')))}", flush=True)
            report = run_cell(cell, args.out, args.timeout_s)
            over = report.get("over_budget", [])
            verdict = report.get("tool_error", "")[-300:] or ("over budget: " + ", ".join(over) if over else "fits")
            print(f"{cell.key}: {verdict} ({report['host']['wall_s']:.0f} s)", flush=True)
    print(render(args.out))
    return 0
