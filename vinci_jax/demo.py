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

from vinci_jax.paths import is_remote

StageFn = Callable[[ml_collections.ConfigDict], str]
STAGES: dict[str, StageFn] = {}
TIMINGS: dict[str, dict[str, float]] = {}  # {stage: {seconds, budget_s}} of the stages run so far (for the report)


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
    if is_remote(config.workdir):  # the stages render, copy and delete run dirs on this machine's disk
        raise ValueError(f"the demo's workdir must be a local directory, not {config.workdir!r} (the sft and virl "
                         "jobs take gs:// workdirs)")  # fmt: skip
    root = Path(config.workdir)
    return {name: root / name for name in ("corpus", "base", "sft", "virl", "baseline", "report", "export")}


def _demo_vocab(config: ml_collections.ConfigDict) -> bool:
    """Whether the demo's model uses the corpus' compact vocabulary (vinci_jax/demo_vocab.py) or Qwen's full one."""
    vocab = str(config.get("vocab", "qwen"))
    if vocab not in ("demo", "qwen"):
        raise ValueError(f"config.vocab must be 'demo' or 'qwen', not {vocab!r}")
    return vocab == "demo"


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
        simple=bool(c.get("simple", False)),
        refine_fraction=float(c.refine_fraction),
        val_fraction=float(c.test_fraction),
        test_fraction=float(c.test_fraction),
    )
    from vinci_jax.demo_heldout import write_heldout

    corpus = str(_paths(config)["corpus"])
    stats = ensure_synth(corpus, synth, num_workers=int(c.workers))
    domains = len(synth.domains)
    per_domain = -(-int(config.eval.prompts) // domains)
    held = write_heldout(corpus, per_domain=per_domain)
    val = write_heldout(corpus, per_domain=per_domain, source="val")  # for choosing settings (eval.split=val)
    vocab = ""
    if _demo_vocab(config):  # after the held-out split: its prompts are tokenized by the same vocabulary
        from vinci_jax.demo_vocab import write_base

        layers = int(config.get("model", {}).get("num_layers", 0))
        base = write_base(_paths(config)["base"], corpus, num_layers=layers, seed=int(config.seed), **IMAGE_PIXELS)
        vocab = (
            f"; demo vocabulary {base['tokens']} tokens (LM head {base['vocab_size']} rows, Qwen's "
            f"{base['qwen_tokens']}), random-init base model in {_paths(config)['base']}"
        )
    return (
        f"{stats['written']} samples {stats['domain']} splits {stats.get('split')}; held-out (distinct, unseen in "
        f"training) {held['per_domain']} = {held['total']}, left out {held['dropped']}; val held-out (also none of "
        f"the test targets) {val['total']}{vocab}"
    )


def _tiny_job_config(
    configs_module: types.ModuleType,
    config: ml_collections.ConfigDict,
    name: str,
    steps: int,
    workdir: Path | None = None,
    fresh: bool | None = None,
) -> ml_collections.ConfigDict:
    """The job's tiny preset in the demo's `name` workdir (emptied when `fresh`), seed, steps and image range."""
    workdir = workdir or _paths(config)[name]
    if config.fresh if fresh is None else fresh:
        shutil.rmtree(workdir, ignore_errors=True)
    cfg = configs_module.get_config("tiny")
    cfg.workdir, cfg.seed, cfg.num_steps = str(workdir), config.seed, steps
    cfg.data.min_pixels, cfg.data.max_pixels = IMAGE_PIXELS["min_pixels"], IMAGE_PIXELS["max_pixels"]
    cfg.model.num_layers = int(config.get("model", {}).get("num_layers", 0))  # SFT and ViRL build the same depth
    if _demo_vocab(config):  # both start from the data stage's base model (its config.json and tokenizer)
        base = _paths(config)["base"]
        if not (base / "config.json").is_file():
            raise FileNotFoundError(f"no demo base model in {base}: run the data stage first (config.vocab=demo)")
        cfg.model.hf_dir = str(base)
    return cfg


def _sft_job_config(
    config: ml_collections.ConfigDict, workdir: Path, steps: int, fresh: bool
) -> ml_collections.ConfigDict:
    from configs import sft as sft_configs

    c = config.sft
    cfg = _tiny_job_config(sft_configs, config, "sft", steps, workdir=workdir, fresh=fresh)
    cfg.data.train_path = str(_paths(config)["corpus"])
    cfg.data.seq_len = int(c.seq_len)
    cfg.data.global_batch_size = int(c.batch)
    cfg.data.patches_per_row = 256
    cfg.optimizer.learning_rate = float(c.learning_rate)
    cfg.optimizer.warmup_steps = int(c.warmup_steps)
    cfg.checkpoint.every_steps = steps
    cfg.eval_every = steps
    return cfg


@stage("sft")
def sft_stage(config: ml_collections.ConfigDict) -> str:
    """SFT of the tiny Qwen2.5-VL (real tokenizer) on the corpus; the checkpoint seeds ViRL."""
    from vinci_jax.train.sft import SFTTrainer

    paths, steps = _paths(config), int(config.sft.steps)
    cfg = _sft_job_config(config, paths["sft"], steps, fresh=bool(config.fresh))
    began = time.perf_counter()
    summary = SFTTrainer(cfg).fit()
    seconds = time.perf_counter() - began
    (paths["sft"] / "timing.json").write_text(json.dumps({"seconds": seconds, "seconds_per_step": seconds / steps}))
    losses = [json.loads(line) for line in (paths["sft"] / "metrics.jsonl").read_text().splitlines()]
    first, last = losses[0].get("loss"), losses[-1].get("loss")
    return f"{summary['step']} steps, train loss {first:.3f} -> {last:.3f}, checkpoint in {paths['sft']}"


def _print_scores(label: str, table: dict[str, dict[str, float]]) -> None:
    for domain, row in table.items():
        print(
            f"[demo] held-out, {label}: {domain:5s} reward {row['reward']:.3f} (trivial {row['trivial']:.3f}, "
            f"gold {row['gold']:.3f}, normalised {row['normalised']:+.3f}), execution {row['execution']:.0%}, "
            f"format {row['format']:.0%}, {row['prompts']} prompts",
            flush=True,
        )


def _stage_scores(scores, anchors) -> dict[str, object]:
    """The table (reward beside its anchors) and the mean normalised reward with its interval, per domain."""
    import numpy as np

    from vinci_jax.evaluate.bootstrap import paired_bootstrap

    domains = np.asarray(scores.domains)
    intervals = {}
    for domain in sorted(set(scores.domains)):
        pick = domains == domain
        intervals[domain] = {
            "normalised_mean": paired_bootstrap(scores.normalised[pick], np.zeros(int(pick.sum()))).as_dict()
        }
    return {"table": scores.summary(anchors), "domains": intervals}


def _gains(after, before) -> dict[str, dict[str, float]]:
    """Paired bootstrap of the per-prompt normalised gain, per domain and overall (stratified by domain)."""
    import numpy as np

    from vinci_jax.evaluate.bootstrap import paired_bootstrap

    domains = np.asarray(after.domains)
    out = {"all": paired_bootstrap(after.normalised, before.normalised, strata=after.domains)}
    for domain in sorted(set(after.domains)):
        pick = domains == domain
        out[domain] = paired_bootstrap(after.normalised[pick], before.normalised[pick])
    for name, interval in out.items():
        print(f"[demo]   {name:5s} {interval}", flush=True)
    return {name: interval.as_dict() for name, interval in out.items()}


def _sheet_rows(batch, sft, virl, per_domain: int = 2) -> list[dict[str, object]]:
    def png(scores, i):
        result = scores.rollouts.render_results[i]
        return None if result is None or not getattr(result, "ok", False) else result.png

    rows, taken = [], {}
    for i, domain in enumerate(batch.domains):
        if taken.get(domain, 0) >= per_domain:
            continue
        taken[domain] = taken.get(domain, 0) + 1
        rows.append(
            {
                "domain": domain,
                "target_png": batch.target_pngs[i],
                "sft_png": png(sft, i),
                "sft_reward": float(sft.reward[i]),
                "virl_png": png(virl, i),
                "virl_reward": float(virl.reward[i]),
            }
        )
    return rows


def _baseline_sft(config: ml_collections.ConfigDict, seconds: float) -> str:
    """Continue SFT from the SFT checkpoint (optimizer and data state too) for about `seconds` of wall time."""
    paths = _paths(config)
    sft_metrics = (paths["sft"] / "timing.json").read_text()
    per_step = json.loads(sft_metrics)["seconds_per_step"]
    extra = max(1, round(seconds / per_step))
    shutil.rmtree(paths["baseline"], ignore_errors=True)
    shutil.copytree(paths["sft"], paths["baseline"])
    cfg = _sft_job_config(config, paths["baseline"], int(config.sft.steps) + extra, fresh=False)
    from vinci_jax.train.sft import SFTTrainer

    began = time.perf_counter()
    SFTTrainer(cfg).fit()
    took = time.perf_counter() - began
    print(
        f"[demo] baseline: {extra} more SFT steps in {took:.0f} s (ViRL took {seconds:.0f} s; the SFT stage's "
        f"{per_step:.2f} s/step includes its compile, so the baseline tends to get fewer seconds, not more)",
        flush=True,
    )
    return str(paths["baseline"] / "checkpoints")


def _virl_job_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    from configs import virl as virl_configs

    paths, c = _paths(config), config.virl
    cfg = _tiny_job_config(virl_configs, config, "virl", int(c.steps))
    cfg.data.path = str(paths["corpus"])
    cfg.data.prompts_per_step = int(c.prompts)
    cfg.rollout.n = int(c.n)
    cfg.rollout.max_new_tokens = int(c.max_new_tokens)
    # prompts per engine call (held-out batches too): the paged engine renders each rollout as it finishes, so one
    # large chunk keeps every decode slot busy where small ones decode two rows at a time
    cfg.rollout.chunk_prompts = int(c.get("chunk_prompts", max(1, int(c.prompts) // 2)))
    cfg.rollout.paged.slots = int(c.get("slots", cfg.rollout.paged.slots))  # rows decoded at once (held-out too)
    cfg.optimizer.learning_rate = float(c.learning_rate)
    cfg.algo.kl_coef = float(c.get("kl_coef", cfg.algo.kl_coef))
    cfg.rollout.temperature = float(c.get("temperature", cfg.rollout.temperature))
    cfg.eval.prompts = int(config.eval.prompts)
    cfg.eval.max_new_tokens = int(config.eval.max_new_tokens)
    cfg.checkpoint.every_steps = int(c.steps)
    return cfg


def _heldout_split(config: ml_collections.ConfigDict) -> str:
    """The held-out set the stages score: drawn from the test split (the reported figures) or, with
    `eval.split=val`, from the val split, to compare settings without choosing them on the test figures."""
    from vinci_jax.demo_heldout import HELDOUT_SPLITS

    source = str(config.eval.get("split", "test"))
    if source not in HELDOUT_SPLITS:
        raise ValueError(f"config.eval.split must be one of {sorted(HELDOUT_SPLITS)}, not {source!r}")
    return HELDOUT_SPLITS[source]


def _sft_checkpoints(paths: dict[str, Path]) -> Path:
    """The SFT stage's checkpoint dir, which the held-out and ViRL stages start from (a clear error if missing)."""
    checkpoints = paths["sft"] / "checkpoints"
    if not checkpoints.is_dir():
        raise FileNotFoundError(f"no SFT checkpoint in {checkpoints}: run the sft stage first")
    return checkpoints


@stage("sft_eval")
def sft_eval_stage(config: ml_collections.ConfigDict) -> str:
    """The SFT checkpoint's held-out table (with anchors) alone, no ViRL: the cheap loop for tuning SFT and the
    corpus (`--config.stages=data,sft,sft_eval`). Writes sft/heldout.json."""
    from vinci_jax.demo_heldout import HeldOut
    from vinci_jax.rl.virl import ViRLTrainer

    paths = _paths(config)
    sft_checkpoints = _sft_checkpoints(paths)
    trainer = ViRLTrainer(_virl_job_config(config))
    try:
        held = HeldOut(trainer, int(config.eval.prompts), _heldout_split(config))
        trainer.reset_policy(str(sft_checkpoints))
        scores = held.score()
        result = _stage_scores(scores, held.anchors)
        _print_scores(HELD_OUT_LABELS["after_sft"], result["table"])
        responses = list(scores.rollouts.responses)
        (paths["sft"] / "heldout.json").write_text(json.dumps({**result, "responses": responses}, indent=1))
    finally:
        trainer.close()
    overall = result["table"]["all"]
    return f"normalised {overall['normalised']:+.3f}, execution {overall['execution']:.0%}"


HELD_OUT_LABELS = {
    "random_init": "random init (before SFT)",
    "after_sft": "after SFT (before ViRL)",
    "after_virl": "after ViRL",
    "baseline": "SFT continued for ViRL's wall time (baseline)",
}


@stage("virl")
def virl_stage(config: ml_collections.ConfigDict) -> str:
    """ViRL from the SFT policy with real renders and rewards; held-out figures (with anchors) before/after each
    stage, the paired bootstrap of ViRL's gain, the report and an HF export."""
    from vinci_jax.demo_heldout import HeldOut
    from vinci_jax.demo_report import write_report
    from vinci_jax.rl.virl import ViRLTrainer

    paths = _paths(config)
    trainer = ViRLTrainer(_virl_job_config(config))
    summary: dict[str, object] = {"encoder": trainer.reward.encoder_label, "held_out": {}, "gains": {}}
    held_out = summary["held_out"]
    try:
        held = HeldOut(trainer, int(config.eval.prompts), _heldout_split(config))
        scores = {}

        def score(name: str) -> None:  # printed as soon as measured, so a long run shows its figures as it goes
            scores[name] = held.score()
            held_out[name] = _stage_scores(scores[name], held.anchors)
            _print_scores(HELD_OUT_LABELS[name], held_out[name]["table"])

        if bool(config.eval.get("random_init", True)):
            score("random_init")
        trainer.reset_policy(str(_sft_checkpoints(paths)))
        score("after_sft")
        began = time.perf_counter()
        summary["virl_last_step"] = trainer.train()
        virl_seconds = time.perf_counter() - began
        score("after_virl")
        trainer.export(str(paths["export"]))  # the ViRL policy (the baseline below replaces the trainer's policy)
        if _demo_vocab(config):  # the export's vocabulary is the demo's: ship the map back to Qwen's ids with it
            from vinci_jax.demo_vocab import MAP_FILE

            shutil.copy(paths["base"] / MAP_FILE, paths["export"] / MAP_FILE)
        if config.baseline:
            trainer.reset_policy(_baseline_sft(config, virl_seconds))
            score("baseline")
        print("[demo] ViRL gain over SFT (normalised reward, paired bootstrap 95% interval):", flush=True)
        summary["gains"]["ViRL - SFT"] = _gains(scores["after_virl"], scores["after_sft"])
        if "baseline" in scores:
            print("[demo] ViRL gain over the equal-compute SFT baseline:", flush=True)
            summary["gains"]["ViRL - baseline"] = _gains(scores["after_virl"], scores["baseline"])
        summary["virl_seconds"] = virl_seconds
        summary["stages"] = {**TIMINGS, "virl": {"seconds": None, "budget_s": float(config.budgets.get("virl", 0))}}
        paths["report"].mkdir(parents=True, exist_ok=True)
        (paths["report"] / "summary.json").write_text(json.dumps(summary, indent=1))
        rows = _sheet_rows(held.batch, scores["after_sft"], scores["after_virl"])
        report = write_report(paths["report"], summary, paths["virl"] / "metrics.jsonl", rows)
    finally:
        trainer.close()
    return f"report {report}, HF export {paths['export']}"


def run(config: ml_collections.ConfigDict) -> None:
    names = [s.strip() for s in str(config.stages).split(",") if s.strip()]
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise ValueError(f"unknown demo stages {unknown}; known: {sorted(STAGES)}")
    budgets = dict(config.budgets)
    timings = TIMINGS
    timings.clear()
    total = time.perf_counter()
    for name in names:
        budget = float(budgets.get(name, 0.0))
        print(f"[demo] {name}: starting (budget {budget:.0f} s)", flush=True)
        start = time.perf_counter()
        summary = STAGES[name](config)
        seconds = time.perf_counter() - start
        timings[name] = {"seconds": round(seconds, 1), "budget_s": budget}
        over = " OVER BUDGET" if budget and seconds > budget else ""
        print(f"[demo] {name}: {summary} ({seconds:.1f}s of {budget:.0f}s budget{over})", flush=True)
    wall = time.perf_counter() - total
    times = ", ".join(f"{n} {t['seconds']:.0f}s" for n, t in timings.items())
    print(f"[demo] done in {wall:.0f}s ({times}; budget {sum(budgets.get(n, 0) for n in names):.0f}s)", flush=True)
