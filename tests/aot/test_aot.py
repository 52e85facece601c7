"""vinci_jax.aot: the trainers' programs compile for a small TPU topology from this CPU host (libtpu, nothing runs)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
pytest.importorskip("libtpu", reason="compiling for TPU needs libtpu: pip install 'jax[tpu]' (make test installs it)")

from configs import sft as sft_configs  # noqa: E402
from configs import virl as virl_configs  # noqa: E402
from vinci_jax.aot import topologies  # noqa: E402
from vinci_jax.aot.report import ProgramReport  # noqa: E402
from vinci_jax.aot.run import UnknownName, fit_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGY = "v5e:2x2"
# small shapes: the tiny presets' real 151,936-token vocabulary already dominates the compile time
VIRL_OVERRIDES = {
    "mesh": {"data": 1, "fsdp": 4, "tensor": 1},
    "data.max_prompt_len": 32,
    "rollout.max_new_tokens": 16,
    "rollout.n": 2,
    "rollout.chunk_prompts": 1,
    "algo.micro_batch_rows": 4,
    "algo.logit_chunk": 8,
}


def _config(module, preset: str, overrides: dict):
    config = module.get_config(preset)
    for key, value in overrides.items():
        node = config
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        if isinstance(value, dict):
            node[leaf].update(value)
        else:
            node[leaf] = value
    return config


def _check_fields(row: dict, fits: bool = True) -> None:
    assert not row["error"], row["error"]
    for field in ("argument_bytes", "total_bytes", "compile_s", "roofline_s", "compiled_flops"):
        assert row[field] > 0, (row["name"], field, row[field])
    assert row["fits"] is fits and row["total_bytes"] < row["hbm_bytes"]
    assert (row["headroom_bytes"] > 0) is fits
    assert row["headroom_fraction"] == pytest.approx(1 - row["total_bytes"] / row["hbm_bytes"])
    assert row["largest_temporaries"] and all(t["bytes"] > 0 and "[" in t["shape"] for t in row["largest_temporaries"])
    assert len(row["largest_temporaries"]) <= 5
    assert row["roofline_flops"] == max(row["compiled_flops"], row["model_flops"])
    if row["model_flops"]:
        assert row["flops_ratio"] == pytest.approx(row["compiled_flops"] / row["model_flops"])
        assert 0 < row["mfu_ceiling"] <= 1.0


def test_topology_table_names_chips_hbm_and_peak_with_sources():
    assert {"v4", "v5e", "v5p", "v6e"} <= set(topologies.CHIPS)
    for chip in topologies.CHIPS.values():
        assert chip.hbm_bytes > 0 and chip.peak_bf16_flops > 0 and chip.source.startswith("https://cloud.google.com")
    v5p = topologies.lookup("v5p-64")
    assert (v5p.chips, v5p.topology_name) == (32, "v5p:2x4x4")  # v5p-N counts TensorCores: 2 per chip
    assert topologies.lookup("v5e-256").chips == 256 and topologies.lookup("v6e-64").topology_name == "v6e:8x8"
    assert topologies.lookup("v5e:2x2") is topologies.lookup("v5e-4")
    devices = topologies.topology_devices(topologies.lookup(TOPOLOGY))
    assert len(devices) == 4 and all(d.platform == "tpu" for d in devices)


def test_roofline_counts_the_larger_flops_so_the_mfu_ceiling_stays_at_most_one():
    """Splash attention (a Pallas call) and loop trips are invisible to XLA's cost analysis: compiled FLOPs can be
    far under the analytic count (the 8B grpo_grad once reported an MFU ceiling of 3.55). The roofline then counts
    the analytic FLOPs; where remat makes the compiled count larger, that one."""
    v5p = topologies.lookup("v5p-64")
    peak, bandwidth = v5p.chip.peak_bf16_flops, v5p.chip.hbm_bytes_per_s
    model = 3.55 * 459e12  # an analytic count 3.55 s of peak, with XLA seeing only a second of it
    under = ProgramReport("grpo_grad", "", compiled_flops=459e12, model_flops=model, bytes_accessed=1e9)
    row = under.summary(v5p, 0.9)
    assert row["roofline_flops_from"] == "analytic" and row["roofline_flops"] == model
    assert row["roofline_s"] == pytest.approx(model / peak) and row["roofline_bound"] == "compute"
    assert row["mfu_ceiling"] == pytest.approx(1.0) and row["flops_ratio"] == pytest.approx(1 / 3.55)
    over = ProgramReport("grpo_grad", "", compiled_flops=2 * model, model_flops=model, bytes_accessed=1e9)
    row = over.summary(v5p, 0.9)
    assert row["roofline_flops_from"] == "compiled" and row["mfu_ceiling"] == pytest.approx(0.5)
    memory_bound = ProgramReport("decode", "", compiled_flops=1e12, model_flops=2e12, bytes_accessed=100 * bandwidth)
    row = memory_bound.summary(v5p, 0.9)
    assert row["roofline_bound"] == "memory" and row["roofline_s"] == pytest.approx(100.0)
    assert row["mfu_ceiling"] == pytest.approx(2e12 / peak / 100.0)


def test_unknown_topology_lists_the_known_ones():
    with pytest.raises(UnknownName, match="known topologies: .*v5p-64"):
        fit_report(virl_configs.get_config("tiny"), "v9x-8")
    with pytest.raises(UnknownName, match="the virl job has .*grpo_grad"):
        fit_report(virl_configs.get_config("tiny"), TOPOLOGY, programs=["sft_train_step"])


def test_tiny_virl_programs_compile_for_a_tpu_topology_with_sharded_gradients():
    config = _config(virl_configs, "tiny", VIRL_OVERRIDES)
    result, table = fit_report(config, TOPOLOGY, image_tokens=16, reward_crops=4)
    rows = {r["name"]: r for r in result["programs"]}
    # the tiny preset's defaults add the rollout engine's prefill and decode burst (rollout.engine=paged) and the
    # gradient on shared-prefix rows (algo.row_layout=shared_prefix) beside the unshared one
    assert set(rows) == {"grpo_grad", "grpo_grad_shared_prefix", "grpo_apply", "sampler_prefill", "sampler_decode",
                         "engine_prefill", "engine_decode", "reward_encoder", "vision_tower"}  # fmt: skip
    for row in rows.values():
        _check_fields(row)
        assert row["name"] in table
    assert result["over_budget"] == [] and result["chips"] == 4
    # the micro-batch gradient comes out FSDP-sharded like the fp32 params (4 chips): about a quarter of them
    grad, apply = rows["grpo_grad"], rows["grpo_apply"]
    params_per_chip = apply["output_bytes"] / 3  # apply returns params + Adam mu + nu, all sharded alike
    assert grad["output_bytes"] < 1.2 * params_per_chip
    assert apply["alias_bytes"] > 0  # the train state is donated
    # the engine's prefill writes into its page pool in place (donated), as its decode burst does
    assert rows["engine_prefill"]["alias_bytes"] > 0 and rows["engine_decode"]["alias_bytes"] > 0


def test_tiny_sft_step_compiles_and_an_over_budget_program_is_named():
    overrides = {"data.global_batch_size": 4, "data.seq_len": 32, "data.patches_per_row": 64, "grad_accum_steps": 2,
                 "mesh": {"data": 2, "fsdp": 2, "tensor": 1}}  # fmt: skip
    config = _config(sft_configs, "tiny", overrides)
    result, _ = fit_report(config, TOPOLOGY, image_tokens=16, hbm_fraction=1e-6)
    (row,) = result["programs"]
    assert row["name"] == "sft_train_step"
    _check_fields(row, fits=False)
    assert row["model_flops"] > 0 and row["alias_bytes"] > 0  # the train state is donated
    assert result["over_budget"] == ["sft_train_step"]
    (reason,) = result["over_budget_reasons"]
    assert reason.startswith("sft_train_step on v5e-4: needs") and "over the budget" in reason


@pytest.mark.slow
def test_command_line_exit_codes(tmp_path):
    """2 and the known names for an unknown topology; 3 naming the program over --hbm_fraction."""
    cli = [sys.executable, "-m", "vinci_jax.aot", "--config", "configs/virl.py:tiny"]
    result = subprocess.run([*cli, "--topology", "v5p-7"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "unknown topology 'v5p-7'" in result.stderr and "v6e-64" in result.stderr
    out = tmp_path / "report.json"
    args = ["--topology", TOPOLOGY, "--programs", "grpo_apply", "--hbm_fraction", "1e-6", "--json_out", str(out)]
    result = subprocess.run([*cli, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "DOES NOT FIT: grpo_apply on v5e-4" in result.stderr and "over the budget" in result.stderr
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert last["over_budget"] == ["grpo_apply"] and json.loads(out.read_text()) == last


def test_compile_depths_and_the_table_cells_pass_config_overrides_through():
    from vinci_jax.aot.run import compile_depths
    from vinci_jax.aot.table import CELLS, SLICES, Cell, markdown

    assert (
        compile_depths(0, 36) == [36] and compile_depths(3, 36) == [3, 6] and compile_depths([9, 3, 6], 36) == [3, 6, 9]
    )
    assert compile_depths(20, 36) == [36]  # 2N past the model's depth: one full-depth compile
    keys = [c.key for c in CELLS]
    assert len(set(keys)) == len(keys) and {c.topology for c in CELLS} == set(SLICES)
    assert [c.topology for c in CELLS[:5]] == ["v5p-64"] * 5  # v5p-64 first for every job
    cell = Cell("Qwen3-VL-8B", "configs/virl.py:qwen3_vl_8b", "v5p-64", "3", ("model.scan_layers=true",))
    command = cell.command(Path("/tmp/x.json"))
    assert command[-1] == "--config.model.scan_layers=true" and ["--num_layers", "3"] == command[7:9]
    row = {"name": "grpo_grad", "error": "", "hbm_bytes": 95 * 2**30, "total_gib": 60.0, "temp_bytes": 50 * 2**30,
           "fits": True, "headroom_fraction": 0.37, "largest_temporaries": [{"shape": "bf16[4096,151936]",
           "bytes": 2**30}], "compiled_flops": 1e15, "model_flops": 2e15, "roofline_s": 4.4,
           "roofline_bound": "compute", "mfu_ceiling": 1.0, "extrapolated_from_layers": [6, 9], "compile_s": 600.0,
           "extrapolation_check": [{"layers": 3, "measured_gib": 20.0, "line_gib": 20.5}]}  # fmt: skip
    report = {"cell": {"job": "ViRL", "model": "Qwen3-VL-8B", "topology": "v5p-64"}, "decoder_layers": 36,
              "mesh": {"data": 1, "fsdp": -1, "tensor": 1}, "chips": 32,
              "host": {"load_before": 8.2, "load_after": 11.9}, "programs": [row]}  # fmt: skip
    line = markdown([report]).splitlines()[-1]
    assert line.startswith("| ViRL Qwen3-VL-8B | v5p-64 (1x32x1) | grpo_grad | 60.0 of 95 (temp 50.0) | yes (37%)")
    assert "6+9 -> 36; at 3: 20.0 measured, 20.5 line" in line and "| 600 (8-12) |" in line


def test_peak_breakdown_names_the_source_ops_live_at_the_peak():
    """Parsed from the tail of XLA's live-range dump (`--dump_dir`), in its own format."""
    from vinci_jax.aot.report import peak_breakdown

    text = """HloLiveRange (max 80):
  Live ranges at 78 (peak):
    fusion.22{0}: 16777216 bytes (cumulative: 16777216 bytes)
  Stack trace breakdown for peak usage: 35 667 968 bytes
    main.2_spmd (100.0%, total: 35 667 968 bytes, current: 0 bytes, remaining: 35 667 968 bytes)
      ├── jit(f)/jvp()/dot_general{0} (47.0%, total: 16 777 216 bytes, current: 16 777 216 bytes, remaining: 1 bytes)
      │   └── jit(f)/jvp()/layers_3/mlp (1.0%, total: 4 096 bytes, current: 4 096 bytes, remaining: 0 bytes)
      ├── jit(f)/transpose(jvp())/dot_general (35.3%, total: 12 599 296 bytes, current: 12 599 296 bytes, remaining: 0)
      └── a (5.9%, total: 2 097 152 bytes, current: 2 097 152 bytes, remaining: 0 bytes)
"""
    found = peak_breakdown(text, count=3)
    assert [n["source"] for n in found] == ["jit(f)/jvp()/dot_general{0}", "jit(f)/transpose(jvp())/dot_general", "a"]
    assert [n["bytes"] for n in found] == [16777216, 12599296, 2097152]
    assert peak_breakdown("no breakdown here") == []


def test_pod_presets_put_one_row_per_chip_on_their_v5p_64_slice():
    """A micro-batch whose rows do not divide the chips is replicated on every chip (the 8B gradient once needed
    5 TiB); the released SFT step is 128 rows of 8,192 tokens, ViRL 256 prompts x 8 rollouts."""
    chips = topologies.lookup("v5p-64").chips
    for preset in ("qwen2_5_vl_7b", "qwen3_vl_8b"):
        virl = virl_configs.get_config(preset)
        assert virl.algo.micro_batch_rows == chips and virl.model.remat == "full", preset
        # shared-prefix rows: one group (a prompt and its n responses) per chip, 8x a padded micro-batch's rollouts
        assert virl.algo.row_layout == "shared_prefix" and virl.algo.group_rows == chips, preset
        assert (virl.data.prompts_per_step * virl.rollout.n) % virl.algo.micro_batch_rows == 0
    for preset in ("qwen2_5_vl_7b", "qwen3_vl_8b", "qwen2_5_vl_32b"):
        sft = sft_configs.get_config(preset)
        assert sft.data.global_batch_size == chips and sft.data.global_batch_size * sft.grad_accum_steps == 128
        assert sft.data.seq_len == 8192 and sft.model.attention == "splash", preset
    assert sft_configs.get_config("qwen2_5_vl_32b").model.remat == "full"


def test_table_cell_streams_progress_and_stops_at_its_timeout(capsys):
    """A cell's compile echoes its "compiling ..." lines as they come (a long table run shows where it is) and is
    killed at the cell's timeout, its output's tail kept for the table's error row."""
    from vinci_jax.aot.table import _stream

    script = "import sys, time; print('compiling grpo_grad ...', flush=True); print('noise'); sys.exit(3)"
    code, tail = _stream([sys.executable, "-c", script], "cell-a", 60)
    assert code == 3 and "noise" in tail
    assert "cell-a: compiling grpo_grad ..." in capsys.readouterr().out
    hang = "import time; print('compiling sampler_decode ...', flush=True); time.sleep(60)"
    code, tail = _stream([sys.executable, "-c", hang], "cell-b", 1.0)
    assert code == -1 and tail.startswith("timed out after 1 s") and "sampler_decode" in tail


def test_sft_table_cells_keep_the_released_batch_one_row_per_batch_shard_and_chunked_logits():
    """Every SFT cell of the table, with its slice's overrides, steps 128 rows of 8,192 tokens, its micro-batch rows
    divide the slice's batch shards (data x fsdp) exactly once per shard, and its loss runs the LM head in chunks."""
    from vinci_jax.aot.table import CELLS

    cells = [c for c in CELLS if c.job == "SFT"]
    assert {c.topology for c in cells} == {"v5p-64", "v5e-256", "v6e-64"}
    for cell in cells:
        config = cell.load_config(ROOT)
        chips = topologies.lookup(cell.topology).chips
        mesh = config.mesh.to_dict()
        sizes = {a: int(mesh[a]) for a in ("data", "fsdp", "tensor")}
        free = [a for a, s in sizes.items() if s == -1]
        for axis in free:
            sizes[axis] = chips // abs(sizes["data"] * sizes["fsdp"] * sizes["tensor"])
        assert sizes["data"] * sizes["fsdp"] * sizes["tensor"] == chips, cell.key
        assert config.data.global_batch_size * config.grad_accum_steps == 128, cell.key
        assert config.data.global_batch_size == sizes["data"] * sizes["fsdp"], cell.key
        assert config.data.seq_len == 8192 and 0 < config.logit_chunk < config.data.seq_len, cell.key
        if cell.topology != "v5p-64":  # 16 / 32 GiB chips: each layer recomputed whole
            assert config.model.remat == "full", cell.key


def test_virl_table_cells_train_on_one_shared_prefix_row_per_batch_shard_of_their_slice():
    """Every ViRL cell, with its slice's overrides as the tool parses them, compiles the presets' training layout
    (shared-prefix rows, grpo_grad_shared_prefix) at the released batch, and both its GRPO micro-batches (group rows,
    and the padded grpo_grad's rows) are sharded over all of the slice's batch axes, one row per batch shard:
    rows that do not divide them are replicated on every chip (no compile here; the tool's own mesh)."""
    from vinci_jax import sharding
    from vinci_jax.aot.table import CELLS, SLICES

    cells = [c for c in CELLS if c.job == "ViRL"]
    assert {c.topology for c in cells} == set(SLICES) and len(cells) == 2 * len(SLICES)
    for cell in cells:
        config = cell.load_config(ROOT)
        assert config.algo.row_layout == "shared_prefix" and not cell.programs, cell.key  # adds the shared gradient
        n, prompts = config.rollout.n, config.data.prompts_per_step
        assert (prompts, n, config.data.max_prompt_len, config.rollout.max_new_tokens) == (256, 8, 6144, 10240)
        mesh = sharding.make_mesh(config.mesh.to_dict(), topologies.topology_devices(topologies.lookup(cell.topology)))
        shards = mesh.shape["data"] * mesh.shape["fsdp"]
        for rows in (config.algo.group_rows, config.algo.micro_batch_rows):
            first = sharding.logical_to_spec(("batch", None), (rows, 16), mesh)[0]
            axes = (first,) if isinstance(first, str) else tuple(first or ())
            assert rows == shards and math.prod(mesh.shape[a] for a in axes) == shards, (cell.key, rows, first)
        assert (prompts * n) % (config.algo.group_rows * n) == 0, cell.key  # whole micro-batches a step
