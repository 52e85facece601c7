"""Compile a `Program` for a topology and read what XLA says about it: memory per chip, FLOPs, largest buffers.

All figures are per chip: an SPMD program compiles to one per-device executable, and `memory_analysis()` /
`cost_analysis()` describe that executable. Total memory = arguments + outputs - aliased (donated inputs reused as
outputs) + temporaries + generated code; the budget is `hbm_fraction` of the chip's HBM. The roofline bound is the
larger of compiled FLOPs / peak and bytes accessed / HBM bandwidth; the MFU ceiling is the model FLOPs (analytic)
done in that time over the peak, an upper bound on what a run can reach.

Which FLOPs the roofline counts: the larger of the compiled and the analytic count. XLA's `cost_analysis()` misses
work it cannot see: Pallas kernels (splash attention is a custom call with no cost estimate, so the attention FLOPs
of the 7B / 8B presets count as zero) and all but one trip of a while loop (`lax.map` over logit chunks, a layer
scan, a vision block loop). The analytic count misses what the program really does on top of the model's
arithmetic (remat recomputation, padding). Neither is a safe bound alone; the larger is, and since the roofline
time is then at least model FLOPs / peak, the MFU ceiling (model FLOPs / peak over the roofline time) is <= 1 by
construction.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from pathlib import Path
from typing import Any

import jax

from vinci_jax.aot.programs import Program
from vinci_jax.aot.topologies import Topology

GIB = 2**30
_SIZES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f32": 4,
          "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}  # fmt: skip
_INSTRUCTION = re.compile(r"^\s+(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_OPCODE = re.compile(r"\s([a-z][\w\-]*)\(")
_ARRAY = re.compile(r"(\w+)\[([\d,]*)\]")
_COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_SKIP_OPS = {"parameter", "get-tuple-element", "tuple", "bitcast", "constant", "copy-start", "copy-done"}

# fields that grow with depth (extrapolated linearly over decoder layers)
LINEAR_FIELDS = ("argument_bytes", "output_bytes", "alias_bytes", "temp_bytes", "code_bytes", "compiled_flops",
                 "bytes_accessed", "model_flops")  # fmt: skip


_PEAK_NODE = re.compile(
    r"^[\s│├└─]*(?P<name>\S.*?) \((?P<pct>[\d.]+)%, total: (?P<total>[\d ]+) bytes, current: (?P<current>[\d ]+) bytes"
)


def peak_breakdown(live_range_text: str, count: int = 10) -> list[dict[str, Any]]:
    """Where the peak is: the `count` largest contributors of XLA's "stack trace breakdown for peak usage" (a
    dump's `*after_optimizations-live-range.txt`), by the bytes each source op (its JAX name stack) holds live at
    the peak. Temporaries alone name shapes; this names what made them (`--dump_dir`)."""
    lines = live_range_text.splitlines()
    start = next((i for i, line in enumerate(lines) if "Stack trace breakdown for peak usage" in line), None)
    if start is None:
        return []
    nodes = []
    for line in lines[start + 1 :]:
        match = _PEAK_NODE.match(line)
        if not match:
            if line.strip() and not line.startswith(" "):
                break
            continue
        current = int(match.group("current").replace(" ", ""))
        if current:
            nodes.append({"source": match.group("name"), "bytes": current})
    return sorted(nodes, key=lambda n: -n["bytes"])[:count]


def largest_temporaries(hlo_text: str, count: int = 5) -> list[dict[str, Any]]:
    """The `count` largest array results of instructions outside fusion bodies in compiled HLO text (fusion
    internals never reach memory; parameters are arguments, not temporaries)."""
    fused = set()
    for line in hlo_text.splitlines():
        if " fusion(" in line:
            fused.update(_CALLS.findall(line))
    found: dict[tuple[str, str], dict[str, Any]] = {}
    inside_fusion = False
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line) if not line.startswith(" ") else None  # instructions are indented
        if header:
            inside_fusion = header.group(1) in fused
            continue
        match = _INSTRUCTION.match(line)
        if not match or inside_fusion:
            continue
        name, rest = match.groups()
        opcode = _OPCODE.search(" " + rest)
        if not opcode or opcode.group(1) in _SKIP_OPS:
            continue
        result = rest[: opcode.start()]  # the result type: one array or a tuple (take its largest element)
        best = None
        for dtype, dims in _ARRAY.findall(result):
            if dtype not in _SIZES:
                continue
            size = _SIZES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
            if best is None or size > best[0]:
                best = (size, f"{dtype}[{dims}]")
        if best is None:
            continue
        key = (best[1], opcode.group(1))
        if key not in found or found[key]["bytes"] < best[0]:
            found[key] = {"name": name, "op": opcode.group(1), "shape": best[1], "bytes": best[0]}
    return sorted(found.values(), key=lambda t: -t["bytes"])[:count]


@dataclasses.dataclass
class ProgramReport:
    name: str
    note: str
    argument_bytes: float = 0.0
    output_bytes: float = 0.0
    alias_bytes: float = 0.0
    temp_bytes: float = 0.0
    code_bytes: float = 0.0
    compiled_flops: float = 0.0
    bytes_accessed: float = 0.0
    model_flops: float = 0.0  # per chip
    compile_s: float = 0.0
    largest_temporaries: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    peak_sources: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # with a dump dir only
    error: str = ""
    extrapolated_from_layers: tuple[int, ...] = ()

    @property
    def total_bytes(self) -> float:
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes + self.code_bytes

    def summary(self, topology: Topology, hbm_fraction: float) -> dict[str, Any]:
        chip = topology.chip
        budget = hbm_fraction * chip.hbm_bytes
        roofline_flops = max(self.compiled_flops, self.model_flops)
        flops_s = roofline_flops / chip.peak_bf16_flops
        memory_s = self.bytes_accessed / chip.hbm_bytes_per_s
        roofline = max(flops_s, memory_s)
        out = dataclasses.asdict(self)
        out.update(
            total_bytes=self.total_bytes,
            total_gib=round(self.total_bytes / GIB, 2),
            hbm_bytes=chip.hbm_bytes,
            budget_bytes=budget,
            headroom_bytes=budget - self.total_bytes,
            headroom_fraction=1.0 - self.total_bytes / chip.hbm_bytes,
            fits=not self.error and self.total_bytes <= budget,
            flops_ratio=self.compiled_flops / self.model_flops if self.model_flops else None,
            roofline_flops=roofline_flops,
            roofline_flops_from="compiled" if self.compiled_flops >= self.model_flops else "analytic",
            roofline_s=roofline,
            roofline_bound="compute" if flops_s >= memory_s else "memory",
            mfu_ceiling=min(1.0, (self.model_flops / chip.peak_bf16_flops) / roofline) if roofline else None,
            extrapolated_from_layers=list(self.extrapolated_from_layers),
        )
        return out


def _newest_live_range(dump_dir: str, since: float) -> str:
    """The live-range dump XLA wrote for the latest compile (`--xla_dump_to=dump_dir`), or ""."""
    paths = [p for p in Path(dump_dir).glob("*after_optimizations-live-range.txt") if p.stat().st_mtime >= since]
    return max(paths, key=lambda p: p.stat().st_mtime).read_text() if paths else ""


def compile_program(program: Program, mesh: Any, dump_dir: str = "") -> ProgramReport:
    """Lower and compile `program` on `mesh`; a compile failure (e.g. out of HBM) is recorded, not raised. With
    `dump_dir` (XLA dumping there) the report names the sources of the peak's live bytes."""
    report = ProgramReport(program.name, program.note, model_flops=program.model_flops / mesh.size)
    start, start_wall = time.perf_counter(), time.time() - 1.0
    try:
        with jax.set_mesh(mesh):
            compiled = program.fn.lower(*program.args, **program.static).compile()
    except Exception as err:  # noqa: BLE001 - XLA raises XlaRuntimeError / ValueError alike; keep the message
        report.compile_s = time.perf_counter() - start
        report.error = f"{type(err).__name__}: {str(err).strip()[:1500]}"
        return report
    report.compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    report.argument_bytes = float(memory.argument_size_in_bytes)
    report.output_bytes = float(memory.output_size_in_bytes)
    report.alias_bytes = float(memory.alias_size_in_bytes)
    report.temp_bytes = float(memory.temp_size_in_bytes)
    report.code_bytes = float(memory.generated_code_size_in_bytes)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    report.compiled_flops = float(cost.get("flops", 0.0)) * program.loop_iterations
    report.bytes_accessed = float(cost.get("bytes accessed", 0.0)) * program.loop_iterations
    report.largest_temporaries = largest_temporaries(compiled.as_text())
    if dump_dir:
        report.peak_sources = peak_breakdown(_newest_live_range(dump_dir, start_wall))
    return report


def extrapolate(small: ProgramReport, large: ProgramReport, layers: tuple[int, int], full: int) -> ProgramReport:
    """Linear in decoder layers through the compiles at `layers` = (a, b) layers, evaluated at `full` layers."""
    a, b = layers
    if small.error or large.error:
        out = dataclasses.replace(large if large.error else small)
        out.extrapolated_from_layers = layers
        return out
    out = dataclasses.replace(large, extrapolated_from_layers=layers)
    for field in LINEAR_FIELDS:
        lo, hi = getattr(small, field), getattr(large, field)
        setattr(out, field, lo + (hi - lo) * (full - a) / (b - a))
    out.compile_s = small.compile_s + large.compile_s
    return out


def format_table(rows: list[dict[str, Any]], topology: Topology) -> str:
    """One line per program: GiB per chip (args / out / alias / temp / total of HBM), FLOPs, roofline, compile s."""
    head = (f"{'program':16} {'args':>7} {'out':>7} {'alias':>7} {'temp':>8} {'total':>8} {'HBM%':>6} "
            f"{'TFLOP/chip':>10} {'model':>8} {'ratio':>6} {'roofline':>10} {'MFU<=':>6} {'compile':>8}")  # fmt: skip
    lines = [f"{topology.name} ({topology.topology_name}, {topology.chips} chips, "
             f"{topology.chip.hbm_bytes / GIB:.0f} GiB HBM and {topology.chip.peak_bf16_flops / 1e12:.0f} "
             f"TFLOP/s bf16 per chip); memory in GiB per chip", head]  # fmt: skip
    for r in rows:
        if r["error"]:
            lines.append(f"{r['name']:16} COMPILE FAILED: {r['error'][:300]}")
            continue
        ratio = f"{r['flops_ratio']:.2f}" if r["flops_ratio"] else "-"
        mfu = f"{r['mfu_ceiling']:.2f}" if r["mfu_ceiling"] is not None else "-"
        extra = f"  (extrapolated from {r['extrapolated_from_layers']} layers)" if r["extrapolated_from_layers"] else ""
        lines.append(
            f"{r['name']:16} {r['argument_bytes'] / GIB:7.2f} {r['output_bytes'] / GIB:7.2f} "
            f"{r['alias_bytes'] / GIB:7.2f} {r['temp_bytes'] / GIB:8.2f} {r['total_gib']:8.2f} "
            f"{100 * r['total_bytes'] / r['hbm_bytes']:6.1f} {r['compiled_flops'] / 1e12:10.2f} "
            f"{r['model_flops'] / 1e12:8.2f} {ratio:>6} {r['roofline_s'] * 1e3:8.1f}ms {mfu:>6} "
            f"{r['compile_s']:7.1f}s{extra}"
        )
        for t in r["largest_temporaries"][:5]:
            lines.append(f"{'':18}{t['bytes'] / GIB:9.3f} GiB  {t['shape']}  {t['op']} ({t['name']})")
        if r["peak_sources"]:
            lines.append(f"{'':18}live at the peak, by source op:")
        for t in r["peak_sources"]:
            lines.append(f"{'':18}{t['bytes'] / GIB:9.3f} GiB  {t['source'][-150:]}")
    return "\n".join(lines)
