"""The ViRL job (`job: virl`): GRPO whose reward comes from rendering each sampled program.

One step: next RL batch (prompts, images, targets) -> sample n rollouts per prompt in chunks while the renderer pool
renders finished chunks -> reward on device -> group advantages -> one clipped policy-gradient update, micro-batched
-> metrics (reward terms per domain, execution and format rates, lengths, clip fraction, entropy, KL, and the
device / render-wait / update / wall seconds that show the overlap) -> checkpoint every `checkpoint.every_steps`.

Resuming from WORKDIR restores params, optimizer state, step and the data iterator; sampling keys are derived from
(seed, step), so the step after a resume is the step an uninterrupted run would have taken.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from renderers.health import InfraBudget
from vinci_jax import multihost, sharding
from vinci_jax.paths import as_path, local_dir_for
from vinci_jax.rl.grpo_step import GRPOLossConfig
from vinci_jax.rl.panels import write_panel
from vinci_jax.rl.render_health import RenderHealth, neutralise_infra
from vinci_jax.rl.rollout import RENDER_ON, Rollouts, render_assignment, rollout_sampler, sample_render_score, summarize
from vinci_jax.rl.updater import GRPOUpdater
from vinci_jax.sampling import Sampler, SamplingParams
from vinci_jax.sampling.engine import Engine
from vinci_jax.train import checkpoint as ckpt_lib
from vinci_jax.train import metrics as metrics_lib
from vinci_jax.train import optimizer as opt_lib
from vinci_jax.train import train_state as ts
from vinci_jax.train.model import ModelFactory, write_model_files
from vinci_jax.train.preemption import PreemptionWatcher

ROLLOUT_ENGINES = ("paged", "lockstep", "vllm")  # config.rollout.engine


def reward_config(config: ml_collections.ConfigDict) -> Any:
    from vinci_jax.reward.config import RewardConfig

    r = config.reward
    return RewardConfig(
        encoder=r.encoder,
        encoder_path=r.encoder_path or None,
        feature=r.feature,
        compute_dtype=r.compute_dtype,
        max_tiles=int(r.max_tiles),
        term_weights=(("visual", float(r.visual_weight)), ("format", float(r.format_weight))),
    )


def loss_config(config: ml_collections.ConfigDict) -> GRPOLossConfig:
    a = config.algo
    return GRPOLossConfig(
        policy_loss=a.policy_loss,
        clip_low=float(a.clip_low),
        clip_high=float(a.clip_high),
        dual_clip=None if a.dual_clip in (None, 0, 0.0) else float(a.dual_clip),
        loss_agg=a.loss_agg,
        kl_coef=float(a.kl_coef),
        kl_estimator=a.kl_estimator,
        temperature=float(config.rollout.temperature),
        old_logprobs=a.old_logprobs,
        logit_chunk=int(a.get("logit_chunk", 0)),
        log_ratio_clamp=float(a.get("log_ratio_clamp", 20.0)),
        tis_cap=float(a.get("tis_cap", 0.0)),
    )


def _domain_weights(value: str) -> Any:
    return json.loads(value) if value.strip().startswith("{") else value


class ViRLTrainer:
    """Owns the policy, optimizer, renderer pool, reward and checkpoints of one ViRL run."""

    def __init__(self, config: ml_collections.ConfigDict):
        from renderers import RenderPool
        from vinci_jax.input_pipeline.rl import RLConfig, RLLoader
        from vinci_jax.policy import load_processor
        from vinci_jax.reward.visual import VisualReward

        self.config = config
        self.engine = str(config.rollout.get("engine", "paged"))
        if self.engine not in ROLLOUT_ENGINES:
            raise ValueError(f"rollout.engine={self.engine!r}; choose one of {ROLLOUT_ENGINES}")
        if self.engine == "vllm":
            from vinci_jax.sampling.vllm_backend import import_vllm

            import_vllm()  # fail before any setup with how to install it
        self._vllm: Any = None
        self.workdir = as_path(config.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mesh = sharding.make_mesh(config.mesh.to_dict())
        self.num_steps = int(config.num_steps)
        # the renderer first: a broken one fails here in seconds, naming its cause, before the model is built
        workers = int(config.render.num_workers) or None
        self.pool = RenderPool(num_workers=workers, timeout_s=float(config.render.timeout_s))
        try:
            self.pool.self_check()
        except BaseException:
            self.pool.close()
            raise
        self.render_health = RenderHealth(InfraBudget(float(config.render.get("max_infra_fraction", 0.05))))

        # the family (Qwen2.5-VL / Qwen3-VL) comes from model.family or the config.json of hf_dir / init_from
        self.factory = ModelFactory(config.model, self.mesh, config.seed)
        self.model_config = self.factory.abstract.config
        base = load_processor(config.model.hf_dir or config.model.init_from or None, self.factory.family)
        pixels = {"min_pixels": int(config.data.min_pixels), "max_pixels": int(config.data.max_pixels)}
        self.processor = self.factory.family.processor_with(base.tokenizer, **pixels)
        write_model_files(self.workdir, self.model_config, self.processor)  # `hf export WORKDIR` needs no more
        self.loader_config = RLConfig(
            data_dir=config.data.path,
            split=config.data.split,
            family=self.factory.family.name,
            prompts_per_batch=int(config.data.prompts_per_step),
            max_prompt_len=int(config.data.max_prompt_len),
            domain_weights=_domain_weights(config.data.domain_weights),
            seed=int(config.seed),
            num_epochs=None,
            min_pixels=int(config.data.min_pixels),
            max_pixels=int(config.data.max_pixels),
            data_shards=int(config.data.get("data_shards", 0)),
        )
        self.loader = RLLoader(self.loader_config, self.processor)

        graphdef, params_abstract, _ = self.factory.abstract_split()
        params_abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params_abstract.to_pure_dict())
        param_shardings = sharding.state_shardings(self.factory.abstract_split()[1], self.mesh).to_pure_dict()
        frozen = opt_lib.freeze_patterns(config.model, self.factory.freeze_groups)
        self.optimizer, self.schedule, self.trainable = opt_lib.make_optimizer(
            config.optimizer, self.num_steps, params_abstract, frozen
        )
        self.state_shardings = ts.train_state_shardings(params_abstract, param_shardings, self.optimizer, self.mesh)
        self.ckpt = ckpt_lib.CheckpointManager(
            self.workdir / "checkpoints",
            max_to_keep=int(config.checkpoint.keep),
            save_interval_steps=int(config.checkpoint.every_steps),
            async_save=bool(config.checkpoint.async_save),
        )
        abstract_state = ts.abstract_train_state(params_abstract, self.optimizer, self.state_shardings)
        restored = self.ckpt.restore_latest(abstract_state)
        if restored is not None:
            self.state, self.start_step = restored.state, int(restored.step)
            if restored.data_state is not None:
                self.loader.set_state(restored.data_state)
            logging.info("resumed ViRL from step %d in %s", self.start_step, self.workdir)
        else:
            self.state, self.start_step = self._fresh_state(), 0
        self.split = ts.SplitModel(graphdef, params_abstract, self.factory.rest())
        reference = None
        if config.algo.kl_coef > 0:  # a frozen copy: the train state's buffers are donated every step
            reference = jax.tree.map(jnp.copy, self.state["params"])
        self.updater = GRPOUpdater(
            self.split,
            self.optimizer,
            self.schedule,
            self.trainable,
            loss_config(config),
            self.mesh,
            group_size=int(config.rollout.n),
            advantage=config.algo.advantage,
            filter_equal_groups=bool(config.algo.filter_equal_groups),
            micro_batch_rows=int(config.algo.micro_batch_rows),
            vision_config=self.model_config.vision,
            pad_token_id=self.processor.pad_token_id,
            state_shardings=self.state_shardings,
            reference_params=reference,
            layout=str(config.algo.get("row_layout", "packed")),
            row_length=int(config.algo.get("row_length", 0)),
            group_rows=int(config.algo.get("group_rows", 0)),
        )
        # each process scores its own rollouts, on its own devices (a process-local mesh)
        reward_mesh = sharding.make_mesh({"data": -1}, jax.local_devices()) if multihost.is_multiprocess() else None
        self.reward = VisualReward(reward_config(config), mesh=reward_mesh or self.mesh)
        self.render_on = str(config.rollout.get("render_on", "owner"))
        if self.render_on not in RENDER_ON:
            raise ValueError(f"rollout.render_on={self.render_on!r}; choose one of {sorted(RENDER_ON)}")
        self.metrics = metrics_lib.MetricsWriter(
            self.workdir, total_steps=self.num_steps, start_step=self.start_step, progress=bool(config.progress)
        )
        self.stop_ids = (self.processor.im_end_token_id, self.processor.pad_token_id)

    # ------------------------------------------------------------------------------------------------ setup
    def _fresh_state(self) -> ts.TrainState:
        init_from = self.config.model.init_from
        if init_from:
            from vinci_jax.policy import load_policy

            dtype = jnp.dtype(self.config.model.param_dtype)
            model, _ = load_policy(init_from, mesh=self.mesh, dtype=dtype, config=self.model_config)
            params = nnx.state(model, nnx.Param).to_pure_dict()
        else:
            params = self.factory.params()
        with jax.set_mesh(self.mesh):
            init = jax.jit(lambda p: ts.init_train_state(p, self.optimizer), out_shardings=self.state_shardings)
            return init(params)

    def policy(self) -> nnx.Module:
        """The live policy as an nnx module over the current (sharded) parameters; no copy."""
        return self.split.merge(self.state["params"])

    def sampler(self) -> Sampler | Engine | Any:
        if self.engine == "vllm":
            return self.vllm_sampler()
        return rollout_sampler(self.config.rollout, self.policy(), self.stop_ids, self.processor.pad_token_id)

    def vllm_sampler(self) -> Any:
        """The run's vLLM engine (built once), holding the current policy's weights (pushed when they changed)."""
        if self._vllm is None:
            from vinci_jax.sampling.vllm_backend import VllmSampler

            r, d = self.config.rollout, self.config.data
            self._vllm = VllmSampler.for_policy(
                self.model_config, self.processor, self.stop_ids, workdir=str(self.workdir),
                max_model_len=int(d.max_prompt_len) + int(r.max_new_tokens),
                max_num_seqs=int(r.n) * int(r.chunk_prompts), seed=int(self.config.seed),
                gpu_memory_utilization=float(r.get("vllm_memory_utilization", 0.15)),
                kv_cache_memory_bytes=int(r.get("vllm_kv_cache_mb", 0)) * 2**20,
            )  # fmt: skip
        self._vllm.sync(self.policy(), self.state["params"])
        return self._vllm

    def sampling_params(self, greedy: bool = False, max_new_tokens: int | None = None) -> SamplingParams:
        r = self.config.rollout
        return SamplingParams(
            n=1 if greedy else int(r.n),
            max_new_tokens=int(max_new_tokens or r.max_new_tokens),
            temperature=float(r.temperature),
            top_p=float(r.top_p),
            top_k=int(r.top_k),
            greedy=greedy,
        )

    # ------------------------------------------------------------------------------------------------ rollouts
    def global_batch(self, local: Any) -> tuple[Any, np.ndarray]:
        """(all processes' prompts in process order, the process that loaded each): every process samples the
        global batch together; the loading process keeps its role for rendering (see `render_assignment`)."""
        from vinci_jax.input_pipeline.rl import RLBatch

        parts = multihost.allgather_objects(local)
        owners = np.concatenate([np.full(len(p.prompts), i, np.int64) for i, p in enumerate(parts)])
        return RLBatch.concat(parts), owners

    def rollout(self, batch: Any, params: SamplingParams, key: jax.Array, owners: np.ndarray | None = None) -> Rollouts:
        """Sample, render and score `batch` (the global batch: the same on every process)."""
        owners = np.zeros(len(batch.prompts), np.int64) if owners is None else owners
        with jax.set_mesh(self.mesh):
            return sample_render_score(
                self.sampler(),
                self.processor,
                self.model_config,
                batch.prompts,
                batch.prompt_texts,
                batch.target_images(),
                list(batch.group_ids),
                params,
                key,
                self.pool,
                self.reward,
                chunk_prompts=int(self.config.rollout.chunk_prompts),
                renders_here=render_assignment(self.render_on, owners),
            )

    def evaluate(self, split: str | None = None, prompts: int | None = None) -> dict[str, float]:
        """Greedy rollouts on held-out prompts: mean reward, execution rate, format rate (and per domain)."""
        return self.evaluate_rollouts(split, prompts)[0]

    def evaluate_rollouts(self, split: str | None = None, prompts: int | None = None) -> tuple[dict, Any, Rollouts]:
        """(summary, held-out batch, greedy rollouts) on the first `prompts` prompts of `split`."""
        import dataclasses

        from vinci_jax.input_pipeline import sources
        from vinci_jax.input_pipeline.rl import RLLoader

        split = split or self.config.data.eval_split
        available = len(sources.array_record_source(self.loader_config.data_dir, split))
        if available == 0:
            raise ValueError(f"held-out split {split!r} of {self.loader_config.data_dir} is empty")
        shards = self.loader_config.data_shards or jax.process_count()
        wanted = min(int(prompts or self.config.eval.prompts), available)
        held_out = dataclasses.replace(
            self.loader_config,
            split=split,
            prompts_per_batch=max(wanted // shards, 1) * shards,
            shuffle=False,
            num_epochs=1,
            domain_weights="natural",
        )
        batch, owners = self.global_batch(next(iter(RLLoader(held_out, self.processor))))
        max_new = int(self.config.eval.max_new_tokens) or None
        params = self.sampling_params(greedy=True, max_new_tokens=max_new)
        rollouts = self.rollout(batch, params, jax.random.key(0), owners)
        return summarize(rollouts, batch.domains), batch, rollouts

    def reset_policy(self, init_from: str) -> None:
        """Start over from the policy at `init_from` (e.g. a finished SFT run) with a fresh optimizer state."""
        self.config.model.init_from = init_from  # an existing key: allowed on a locked config
        self.state = self._fresh_state()
        self.start_step = 0

    # ------------------------------------------------------------------------------------------------ loop
    def train(self) -> dict[str, float]:
        watcher = PreemptionWatcher()
        key = jax.random.key(int(self.config.seed))
        step = self.start_step
        last: dict[str, float] = {}
        try:
            while step < self.num_steps:
                began = time.perf_counter()
                batch, owners = self.global_batch(next(self.loader))
                rollouts = self.rollout(batch, self.sampling_params(), jax.random.fold_in(key, step), owners)
                health = self.render_health.check(
                    rollouts.statuses, rollouts.render_results, rollouts.render_languages,
                    first_step=step == self.start_step,
                )  # fmt: skip
                rollouts.rewards = neutralise_infra(rollouts.rewards, rollouts.prompt_of_row, rollouts.statuses)
                update_began = time.perf_counter()
                self.state, last = self.updater.update(self.state, rollouts)
                jax.block_until_ready(self.state["params"])
                update_s = time.perf_counter() - update_began
                step += 1
                last |= summarize(rollouts, batch.domains) | health
                last |= {
                    "device_s": rollouts.device_s + update_s,
                    "sample_s": rollouts.device_s,
                    "render_wait_s": rollouts.render_wait_s,
                    "update_s": update_s,
                    "wall_s": time.perf_counter() - began,
                }
                self.metrics.write(step, last)
                if self.config.panel_every and step % int(self.config.panel_every) == 0 and jax.process_index() == 0:
                    write_panel(self.workdir / "panels" / f"step_{step:06d}.png", batch, rollouts, self.metrics, step)
                if self.config.eval.every_steps and step % int(self.config.eval.every_steps) == 0:
                    self.metrics.write(step, {f"eval/{k}": v for k, v in self.evaluate().items()})
                self.ckpt.save(step, self.state, self.loader.get_state(), force=step == self.num_steps)
                if watcher.requested or self.ckpt.reached_preemption(step):
                    logging.warning("preemption notice: saving step %d and stopping", step)
                    self.ckpt.save(step, self.state, self.loader.get_state(), force=True)
                    break
        finally:
            watcher.restore()
            self.ckpt.wait()
        return last

    def export(self, out_dir: str) -> None:
        """Write the current policy as an HF directory (weights, config, tokenizer and processor files)."""
        from vinci_jax.models.families import family_of_model

        model = self.policy()
        with local_dir_for(out_dir) as staging:  # a gs:// export dir is written locally, then uploaded
            family_of_model(model).export(model, staging)
            self.processor.save_pretrained(staging)

    def close(self) -> None:
        self.ckpt.close()
        self.metrics.close()
        self.pool.close()


def run(config: ml_collections.ConfigDict) -> None:
    trainer = ViRLTrainer(config)
    try:
        if config.eval.at_start and trainer.start_step == 0:
            print("[virl] held-out before:", json.dumps(trainer.evaluate()), flush=True)
        last = trainer.train()
        print("[virl] last step:", json.dumps(last), flush=True)
        print("[virl] held-out after:", json.dumps(trainer.evaluate()), flush=True)
        if config.export_dir:
            trainer.export(config.export_dir)
            print(f"[virl] exported the policy to {config.export_dir}", flush=True)
    finally:
        trainer.close()
