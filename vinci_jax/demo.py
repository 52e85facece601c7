"""The `demo` job: run each stage the config lists, in order, on tiny data, and say what each one did.

Stages are registered here by name; a stage is a real part of the system (never a stand-in), so the demo doubles as
the smoke test of an install.
"""

from __future__ import annotations

import json
import shutil
import time
import types
from collections.abc import Callable
from pathlib import Path

import ml_collections

StageFn = Callable[[ml_collections.ConfigDict], str]
STAGES: dict[str, StageFn] = {}


def stage(name: str) -> Callable[[StageFn], StageFn]:
    def register(fn: StageFn) -> StageFn:
        STAGES[name] = fn
        return fn

    return register


@stage("env")
def env_stage(config: ml_collections.ConfigDict) -> str:
    """A jitted, sharded computation over the configured mesh, checked against numpy."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from vinci_jax import sharding

    mesh = sharding.make_mesh(config.mesh)
    x = np.arange(8 * 16, dtype=np.float32).reshape(8, 16)
    with jax.set_mesh(mesh):
        xs = jax.device_put(x, sharding.named_sharding(mesh, ("batch", None)))
        y = jax.jit(lambda a: jnp.tanh(a / 100.0) @ a.T)(xs)
    expected = np.tanh(x / 100.0) @ x.T
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-3)
    return f"mesh {dict(mesh.shape)} ok"


# Both SFT and ViRL see images at this size, so what SFT teaches is what ViRL samples from.
IMAGE_PIXELS = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}


def _paths(config: ml_collections.ConfigDict) -> dict[str, Path]:
    root = Path(config.workdir)
    return {name: root / name for name in ("corpus", "sft", "virl", "report", "export")}


@stage("data")
def data_stage(config: ml_collections.ConfigDict) -> str:
    """A synthetic corpus rendered through the sandboxed pool (reused when one with the same config exists)."""
    from vinci_data.synth.build import SynthConfig, ensure_synth

    c = config.corpus
    synth = SynthConfig(
        size=int(c.size),
        seed=int(config.seed),
        domains=tuple(d.strip() for d in c.domains.split(",")),
        difficulty_weights=(1.0, 0.0, 0.0),
        refine_fraction=float(c.refine_fraction),
        val_fraction=float(c.test_fraction),
        test_fraction=float(c.test_fraction),
    )
    stats = ensure_synth(str(_paths(config)["corpus"]), synth, num_workers=int(c.workers))
    return f"{stats['written']} samples {stats['domain']} splits {stats.get('split')}"


def _tiny_job_config(
    configs_module: types.ModuleType, config: ml_collections.ConfigDict, name: str, steps: int
) -> ml_collections.ConfigDict:
    """The job's tiny preset in the demo's `name` workdir (emptied when `fresh`), seed, steps and image range."""
    workdir = _paths(config)[name]
    if config.fresh:
        shutil.rmtree(workdir, ignore_errors=True)
    cfg = configs_module.get_config("tiny")
    cfg.workdir, cfg.seed, cfg.num_steps = str(workdir), config.seed, steps
    cfg.data.min_pixels, cfg.data.max_pixels = IMAGE_PIXELS["min_pixels"], IMAGE_PIXELS["max_pixels"]
    return cfg


@stage("sft")
def sft_stage(config: ml_collections.ConfigDict) -> str:
    """SFT of the tiny Qwen2.5-VL (real tokenizer) on the corpus; the checkpoint seeds ViRL."""
    from configs import sft as sft_configs
    from vinci_jax.train.sft import SFTTrainer

    paths, c = _paths(config), config.sft
    cfg = _tiny_job_config(sft_configs, config, "sft", int(c.steps))
    cfg.data.train_path = str(paths["corpus"])
    cfg.data.seq_len = int(c.seq_len)
    cfg.data.global_batch_size = int(c.batch)
    cfg.data.patches_per_row = 256
    cfg.optimizer.learning_rate = float(c.learning_rate)
    cfg.optimizer.warmup_steps = int(c.warmup_steps)
    cfg.checkpoint.every_steps = int(c.steps)
    cfg.eval_every = int(c.steps)
    summary = SFTTrainer(cfg).fit()
    losses = [json.loads(line) for line in (paths["sft"] / "metrics.jsonl").read_text().splitlines()]
    first, last = losses[0].get("loss"), losses[-1].get("loss")
    return f"{summary['step']} steps, train loss {first:.3f} -> {last:.3f}, checkpoint in {paths['sft']}"


def _rates(summary: dict[str, float]) -> str:
    return f"execution {summary['execution']:.0%}, format {summary['format']:.0%}, reward {summary['reward']:.3f}"


@stage("virl")
def virl_stage(config: ml_collections.ConfigDict) -> str:
    """ViRL from the SFT policy with real renders and rewards; held-out figures before/after each stage."""
    from configs import virl as virl_configs
    from vinci_jax.rl.panels import write_panel
    from vinci_jax.rl.virl import ViRLTrainer

    paths, c = _paths(config), config.virl
    cfg = _tiny_job_config(virl_configs, config, "virl", int(c.steps))
    cfg.data.path = str(paths["corpus"])
    cfg.data.prompts_per_step = int(c.prompts)
    cfg.rollout.n = int(c.n)
    cfg.rollout.max_new_tokens = int(c.max_new_tokens)
    cfg.rollout.chunk_prompts = max(1, int(c.prompts) // 2)
    cfg.optimizer.learning_rate = float(c.learning_rate)
    cfg.eval.prompts = int(config.eval.prompts)
    cfg.eval.max_new_tokens = int(config.eval.max_new_tokens)
    cfg.checkpoint.every_steps = int(c.steps)

    trainer = ViRLTrainer(cfg)
    report: dict[str, object] = {}
    try:
        report["random_init"] = trainer.evaluate()
        print(f"[demo] held-out, random init (before SFT): {_rates(report['random_init'])}", flush=True)
        sft_checkpoints = paths["sft"] / "checkpoints"
        if sft_checkpoints.is_dir():
            trainer.reset_policy(str(sft_checkpoints))
            report["after_sft"] = trainer.evaluate()
            print(f"[demo] held-out, after SFT (before ViRL): {_rates(report['after_sft'])}", flush=True)
        report["virl_last_step"] = trainer.train()
        report["after_virl"], batch, rollouts = trainer.evaluate_rollouts()
        print(f"[demo] held-out, after ViRL: {_rates(report['after_virl'])}", flush=True)
        paths["report"].mkdir(parents=True, exist_ok=True)
        sheet = write_panel(paths["report"] / "heldout_after_virl.png", batch, rollouts)
        (paths["report"] / "summary.json").write_text(json.dumps(report, indent=1))
        trainer.export(str(paths["export"]))
    finally:
        trainer.close()
    return f"report {paths['report'] / 'summary.json'}, contact sheet {sheet}, HF export {paths['export']}"


def run(config: ml_collections.ConfigDict) -> None:
    names = [s.strip() for s in str(config.stages).split(",") if s.strip()]
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise ValueError(f"unknown demo stages {unknown}; known: {sorted(STAGES)}")
    for name in names:
        start = time.perf_counter()
        summary = STAGES[name](config)
        print(f"[demo] {name}: {summary} ({time.perf_counter() - start:.1f}s)", flush=True)
    print("[demo] done", flush=True)
