"""The embedded default run of `make demo`: the whole system end to end on one CPU machine, no downloads.

Stages (in order, each a real part of the system):
  env    a sharded jitted computation over the configured mesh
  data   a small synthetic corpus (SVG and RDKit molecule tasks) rendered by the sandboxed renderer pool
  sft    SFT of a tiny random-init Qwen2.5-VL-shaped model with the real Qwen tokenizer
  virl   GRPO with real renders and the offline image-similarity reward, starting from the SFT policy
The held-out execution rate, format rate and reward are printed before SFT, after SFT and after ViRL; a report
(summary.json and a PNG contact sheet of targets beside renders) and an HF export of the policy go to WORKDIR.

Presets: `cpu` (default), `smoke` (a few steps of everything, for tests).
"""

from __future__ import annotations

import ml_collections

from configs import common

PRESETS = ("cpu", "smoke")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = common.parse_preset(arg, PRESETS, "cpu")
    config = common.base_config("demo")
    config.workdir = "/tmp/vinci_jax/demo"
    config.stages = "env,data,sft,virl"
    config.fresh = True  # start SFT and ViRL from scratch (the corpus is reused when its config matches)
    config.corpus = ml_collections.ConfigDict(
        {"size": 400, "domains": "svg,chem", "refine_fraction": 0.0, "test_fraction": 0.05, "workers": 2}
    )
    config.sft = ml_collections.ConfigDict(
        {"steps": 400, "batch": 4, "seq_len": 256, "learning_rate": 5e-3, "warmup_steps": 10}
    )
    config.virl = ml_collections.ConfigDict(
        {"steps": 4, "prompts": 4, "n": 4, "max_new_tokens": 192, "learning_rate": 1e-4}
    )
    config.eval = ml_collections.ConfigDict({"prompts": 8, "max_new_tokens": 224})
    if preset == "smoke":
        config.corpus.size = 24
        config.sft.steps = 4
        config.virl.steps = 1
        config.virl.prompts = 2
        config.virl.n = 2
        config.virl.max_new_tokens = 8
        config.eval.prompts = 2
        config.eval.max_new_tokens = 8
    return config
