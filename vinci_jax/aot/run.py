"""The AOT fit report as a function: config + topology -> (JSON-ready result, printable table)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from vinci_jax.aot import report as report_lib
from vinci_jax.aot import topologies


class UnknownName(ValueError):
    """An unknown topology or program name (the message lists the known ones)."""


def _compile_all(
    config: ml_collections.ConfigDict, topology: topologies.Topology, devices: list, wanted: Sequence[str],
    layers: int | None, image_tokens: int, reward_crops: int, progress: Callable[[str], None],
    only_depth_scaled: bool = False, dump_dir: str = "",
) -> list[report_lib.ProgramReport]:  # fmt: skip
    from vinci_jax import sharding
    from vinci_jax.aot.programs import build_programs

    config = ml_collections.ConfigDict(config.to_dict())  # a private, unlocked copy
    if layers:
        config.model.num_layers = layers
    mesh = sharding.make_mesh(config.mesh.to_dict(), devices)
    programs = build_programs(config, mesh, image_tokens, reward_crops)
    known = [p.name for p in programs]
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise UnknownName(f"unknown programs {unknown}; the {config.job} job has {known}")
    reports = []
    for program in programs:
        if (wanted and program.name not in wanted) or (only_depth_scaled and not program.depth_scaled):
            continue
        depth = f" with {layers} decoder layers" if layers else ""
        progress(f"compiling {program.name} ({program.note}) for {topology.name}{depth} ...")
        reports.append(report_lib.compile_program(program, mesh, dump_dir))
    return reports


def compile_depths(num_layers: int | Sequence[int], full: int) -> list[int]:
    """The decoder depths to compile: none given (0) -> the model's own; N -> N and 2N; a list -> those (sorted).
    Depths at or over the model's own mean one full-depth compile."""
    depths = [int(num_layers)] if isinstance(num_layers, int) else [int(d) for d in num_layers]
    depths = sorted({d for d in depths if d > 0})
    if len(depths) == 1:
        depths.append(2 * depths[0])
    if not depths or depths[-1] >= full:
        return [full]
    return depths


def fit_report(
    config: ml_collections.ConfigDict,
    topology_name: str,
    *,
    programs: Sequence[str] = (),
    hbm_fraction: float = 0.9,
    num_layers: int | Sequence[int] = 0,
    image_tokens: int = 1024,
    reward_crops: int = 0,
    progress: Callable[[str], None] = lambda line: None,
    dump_dir: str = "",
) -> tuple[dict[str, Any], str]:
    """Compile the job's programs (all, or `programs`) for `topology_name`; with `num_layers` (N: N and 2N; or a
    list of depths) at those decoder depths, extrapolated linearly to the model's depth through the two deepest.
    The other depths check the line: the report gives the measured totals beside the line's values there.
    `dump_dir`: where XLA dumps (the caller sets `--xla_dump_to` before JAX starts); adds the peak's sources."""
    from vinci_jax.train.model import resolve_model

    try:
        topology = topologies.lookup(topology_name)
    except KeyError as err:
        raise UnknownName(err.args[0]) from None
    devices = topologies.topology_devices(topology)
    full = int(resolve_model(config.model)[1].text.num_hidden_layers)
    args = (list(programs), image_tokens, reward_crops, progress)
    dump = {"dump_dir": dump_dir}
    depths = compile_depths(num_layers, full)
    extrapolated = depths != [full]
    checks: dict[str, list[dict[str, float]]] = {}
    if extrapolated:
        # programs that do not grow with the decoder's depth compile once, at the shallowest depth
        by_depth = {}
        for i, depth in enumerate(depths):
            compiled = _compile_all(
                config, topology, devices, args[0], depth, *args[1:], only_depth_scaled=i > 0, **dump
            )
            by_depth[depth] = {r.name: r for r in compiled}
        a, b = depths[-2:]
        reports = []
        for name, first in by_depth[depths[0]].items():
            if name not in by_depth[b]:
                reports.append(first)
                continue
            reports.append(report_lib.extrapolate(by_depth[a][name], by_depth[b][name], (a, b), full))
            small, large = by_depth[a][name], by_depth[b][name]
            line = lambda d, lo=small, hi=large: report_lib.extrapolate(lo, hi, (a, b), d)  # noqa: E731
            checks[name] = [
                {"layers": d, "measured_gib": by_depth[d][name].total_bytes / report_lib.GIB,
                 "temp_gib": by_depth[d][name].temp_bytes / report_lib.GIB, "line_gib": line(d).total_bytes
                 / report_lib.GIB, "compile_s": by_depth[d][name].compile_s}
                for d in depths
                if not by_depth[d][name].error
            ]  # fmt: skip
    else:
        reports = _compile_all(config, topology, devices, args[0], None, *args[1:], **dump)
    rows = [r.summary(topology, hbm_fraction) for r in reports]
    for row in rows:
        if checks.get(row["name"]):
            row["extrapolation_check"] = checks[row["name"]]
    over = [r for r in rows if not r["fits"]]
    reasons = []
    for r in over:
        why = "failed to compile: " + r["error"][:400] if r["error"] else (
            f"needs {r['total_gib']:.1f} GiB per chip, over the budget of {r['budget_bytes'] / 2**30:.1f} GiB "
            f"({hbm_fraction:.0%} of {r['hbm_bytes'] / 2**30:.0f} GiB) by {-r['headroom_bytes'] / 2**30:.1f} GiB"
        )  # fmt: skip
        reasons.append(f"{r['name']} on {topology.name}: {why}")
    result = {
        "config": f"{config.job}:{config.get('preset', '')}",
        "topology": topology.name,
        "topology_name": topology.topology_name,
        "chips": topology.chips,
        "mesh": dict(config.mesh.to_dict()),
        "hbm_bytes_per_chip": topology.chip.hbm_bytes,
        "peak_bf16_flops_per_chip": topology.chip.peak_bf16_flops,
        "hbm_fraction": hbm_fraction,
        "decoder_layers": full,
        "compiled_layers": depths,
        "extrapolated": extrapolated,
        "image_tokens": image_tokens,
        "programs": rows,
        "over_budget": [r["name"] for r in over],
        "over_budget_reasons": reasons,
    }
    return result, report_lib.format_table(rows, topology)
