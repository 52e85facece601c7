"""The embedded default run of `make demo`: the whole system end to end on one CPU machine, no downloads.

Stages (in order, each a real part of the system):
  env    a sharded jitted computation over the configured mesh
  data   a synthetic corpus of all five domains (charts, SVG, web pages, TikZ, RDKit molecules) rendered by the
         sandboxed renderer pool, and its held-out split: distinct targets never seen in training, stratified by domain
  sft    SFT of a tiny random-init Qwen2.5-VL-shaped model with the real Qwen tokenizer
  virl   GRPO with real renders and the offline image-similarity reward, starting from the SFT policy
Held-out (greedy) reward, execution and format per domain are printed before SFT, after SFT and after ViRL, each
beside its anchors (trivial output and gold code on the same targets) and normalised; ViRL's gain over SFT comes with
a paired bootstrap 95% interval. `baseline=True` (`python -m vinci_jax.bench demo --baseline`) also continues SFT
for ViRL's wall time and compares. The report (summary.json, report.html, bar chart, training curve, contact sheet)
and an HF export of the policy go to WORKDIR. Every stage prints its budget (seconds on an idle 2-core machine).

Presets: `cpu` (default), `smoke` (a few steps of everything, for tests).
"""

from __future__ import annotations

import ml_collections

from configs import common

PRESETS = ("cpu", "smoke")
DOMAINS = "chart,svg,web,tikz,chem"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = common.parse_preset(arg, PRESETS, "cpu")
    config = common.base_config("demo")
    config.workdir = "/tmp/vinci_jax/demo"
    config.stages = "env,data,sft,virl"
    config.fresh = True  # start SFT and ViRL from scratch (the corpus is reused when its config matches)
    config.baseline = False  # also continue SFT for ViRL's wall time (equal extra compute) and compare
    # `simple`: the demo's program distribution (vinci_data.synth, `SynthConfig.simple`): a fixed number of elements
    # per picture, so the tiny policy can learn where a program ends (with the difficulty-0 corpus, chart and TikZ
    # answers never closed their fence under greedy decoding and scored below a blank canvas)
    config.corpus = ml_collections.ConfigDict(
        {"size": 1000, "domains": DOMAINS, "simple": True, "refine_fraction": 0.0, "test_fraction": 0.1, "workers": 2}
    )
    # The tiny preset's cost is its 151,936-token LM head, not its body. `demo`: the model's vocabulary is the Qwen
    # BPE cut down to the tokens of this corpus (vinci_jax/demo_vocab.py; the data stage writes it with a random-init
    # base model that SFT starts from); "qwen" keeps the full vocabulary. Four decoder layers instead of two give
    # the policy room to condition on the image.
    config.vocab = "demo"
    config.model = ml_collections.ConfigDict({"num_layers": 4})
    # simple web pages are the longest answers (median 314, max 320 tokens; the others 100-175): 512-token rows hold
    # a page and its prompt (shorter samples are packed), 384 new tokens hold a page and its closing fence
    config.sft = ml_collections.ConfigDict(
        {"steps": 600, "batch": 4, "seq_len": 512, "learning_rate": 5e-3, "warmup_steps": 30}
    )
    config.virl = ml_collections.ConfigDict(
        {
            "steps": 10,
            "prompts": 5,
            "n": 4,
            "max_new_tokens": 384,
            "learning_rate": 5e-4,
            "kl_coef": 0.0,  # > 0: KL penalty to the SFT policy (algo.kl_coef)
            "temperature": 1.0,  # rollout sampling temperature
            "slots": 16,
            "chunk_prompts": 16,
        }
    )
    # 16 per domain. split: the held-out set scored, drawn from the test split (the reported figures) or from val
    # (`--config.eval.split=val`: for comparing ViRL settings; none of its targets is in train or test);
    # random_init=False skips scoring the random-init policy (a settings sweep from an existing SFT checkpoint)
    config.eval = ml_collections.ConfigDict(
        {"prompts": 80, "max_new_tokens": 384, "split": "test", "random_init": True}
    )
    # seconds per stage on an idle 2-core machine (printed as the stages run; the sum is the demo's 20 min bar).
    # Measured with this preset (demo vocabulary; README "Measured"), session 6 at load 2.6-4.7: data 83 s (fresh
    # corpus), sft 371 s, virl 520 s with the --baseline SFT (188 s of it the 10 ViRL steps); never timed fully idle.
    config.budgets = ml_collections.ConfigDict({"env": 15, "data": 90, "sft": 560, "virl": 535})
    if preset == "smoke":
        config.corpus.size = 40
        config.corpus.test_fraction = 0.25
        config.sft.steps = 4
        config.sft.seq_len = 256
        config.virl.steps = 1
        config.virl.prompts = 2
        config.virl.n = 2
        config.virl.max_new_tokens = 8
        config.eval.prompts = 5
        config.eval.max_new_tokens = 8
        config.budgets = ml_collections.ConfigDict({"env": 10, "data": 40, "sft": 40, "virl": 60})
    return config
