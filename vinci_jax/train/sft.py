"""The SFT job (`job: sft`): sharded, preemptible, exactly resumable supervised fine-tuning.

One loop: build mesh, model, optimizer and data from the config; restore the newest checkpoint in WORKDIR (params,
optimizer state, step, data iterator position) onto the current mesh, or start fresh; then repeat
(next global batch -> jitted step with donated state -> metrics -> maybe validation -> maybe async checkpoint) until
`num_steps` or a preemption notice (SIGTERM), which triggers a final checkpoint before exiting.
"""

from __future__ import annotations

import logging as std_logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from vinci_jax import sharding
from vinci_jax.paths import as_path
from vinci_jax.train import checkpoint as ckpt_lib
from vinci_jax.train import data as data_lib
from vinci_jax.train import metrics as metrics_lib
from vinci_jax.train import optimizer as opt_lib
from vinci_jax.train import train_state as ts
from vinci_jax.train.model import ModelFactory, write_model_files
from vinci_jax.train.preemption import PreemptionWatcher
from vinci_jax.train.sft_step import make_eval_step, make_train_step, model_input_names


def make_data_iterators(
    config: ml_collections.ConfigDict, seed: int, model: Any = None, mesh: Mesh | None = None
) -> tuple[Any, Callable[[], Iterator[dict[str, Any]]] | None]:
    """(train iterator with get_state/set_state, factory of a fresh validation iterator or None)."""
    data = config.data
    if data.source == "synthetic":
        from vinci_jax.train.standin import SyntheticSFTIterator

        def make(split_seed: int) -> SyntheticSFTIterator:
            return SyntheticSFTIterator(
                global_batch_size=data.global_batch_size,
                seq_len=data.seq_len,
                vocab_size=data.vocab_size,
                seed=split_seed,
                process_index=jax.process_index(),
                process_count=jax.process_count(),
            )

        return make(seed), lambda: make(seed + 1_000_003)
    if data.source == "grain":
        from vinci_jax.train import sft_data

        vision_config = getattr(getattr(model, "config", None), "vision", None)
        if vision_config is None:
            raise ValueError(
                f"data.source='grain' feeds images, but model {type(model).__name__} has no vision config; "
                "use --config.data.source=synthetic with the stand-in model"
            )
        return sft_data.make_grain_iterators(config, seed, vision_config, mesh)
    raise ValueError(f"data.source {data.source!r} is unknown; use 'grain' or 'synthetic'")


class SFTTrainer:
    """Owns the model, the jitted steps and the checkpoint manager of one SFT run (also used by the benchmark)."""

    def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh | None = None):
        self.config = config
        self.workdir = as_path(config.workdir)
        self.mesh = mesh if mesh is not None else sharding.make_mesh(config.mesh.to_dict())
        self.accum = int(config.grad_accum_steps)
        self.factory = ModelFactory(config.model, self.mesh, config.seed)
        self.input_names = model_input_names(self.factory.abstract)
        graphdef, params_abstract_state, _ = self.factory.abstract_split()
        self.split = ts.SplitModel(
            graphdef,
            jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params_abstract_state.to_pure_dict()),
            self.factory.rest(),
            sharding.state_shardings(params_abstract_state, self.mesh).to_pure_dict(),
        )
        frozen = opt_lib.freeze_patterns(config.model, self.factory.freeze_groups)
        self.optimizer, self.schedule, self.trainable = opt_lib.make_optimizer(
            config.optimizer, config.num_steps, self.split.params, frozen
        )
        params_abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), self.split.params)
        self.state_shardings = ts.train_state_shardings(
            params_abstract, self.split.param_shardings, self.optimizer, self.mesh
        )
        self.abstract_state = ts.abstract_train_state(params_abstract, self.optimizer, self.state_shardings)
        self.num_params = ts.count_params(self.split.params)
        embed = sum(
            x.size
            for path, x in jax.tree_util.tree_flatten_with_path(self.split.params)[0]
            if "embed_tokens" in opt_lib.path_str(path)
        )
        self.flops_per_token = metrics_lib.train_flops_per_token(self.num_params, embed)
        self._step_fn = make_train_step(
            self.split,
            self.optimizer,
            self.schedule,
            self.trainable,
            accum_steps=self.accum,
            input_names=self.input_names,
            logit_chunk=int(config.get("logit_chunk", 0)),
        )
        self._eval_fn = make_eval_step(self.split, self.input_names, int(config.get("logit_chunk", 0)))
        self._jit_step: Any = None
        self._jit_eval: Any = None

    # -- state ---------------------------------------------------------------------------------------------------
    def init_state(self) -> ts.TrainState:
        params = self.factory.params()
        with jax.set_mesh(self.mesh):
            opt_state = jax.jit(self.optimizer.init, out_shardings=self.state_shardings["opt_state"])(params)
        step = jax.device_put(jnp.zeros((), jnp.int32), self.state_shardings["step"])
        return {"params": params, "opt_state": opt_state, "step": step}

    # -- compiled steps ------------------------------------------------------------------------------------------
    def jitted_train_step(self, batch_shardings: Any) -> Any:
        """The jitted, donating train step for batches on `batch_shardings` (built once; vinci_jax.aot lowers it)."""
        if self._jit_step is None:
            self._jit_step = jax.jit(
                self._step_fn,
                in_shardings=(self.state_shardings, batch_shardings),
                out_shardings=(self.state_shardings, None),
                donate_argnums=(0,),
            )
        return self._jit_step

    def train_step(self, state: ts.TrainState, batch: dict[str, Any]) -> tuple[ts.TrainState, dict[str, Any]]:
        step = self.jitted_train_step(jax.tree.map(lambda x: x.sharding, batch))
        with jax.set_mesh(self.mesh):
            return step(state, batch)

    def eval_sums(self, params: Any, batch: dict[str, Any]) -> tuple[jax.Array, jax.Array]:
        if self._jit_eval is None:
            self._jit_eval = jax.jit(self._eval_fn)
        with jax.set_mesh(self.mesh):
            return self._jit_eval(params, batch)

    def validate(self, params: Any, make_val: Callable[[], Iterator[dict[str, Any]]], steps: int) -> float:
        """Token-mean loss over the first `steps` batches of a fresh validation iterator."""
        assembler = data_lib.BatchAssembler(make_val(), self.mesh, accum_steps=1)
        total, count = 0.0, 0.0
        for _ in range(steps):
            try:
                batch = next(assembler)
            except StopIteration:
                break
            t, c = jax.device_get(self.eval_sums(params, batch))
            total, count = total + float(t), count + float(c)
        return total / max(count, 1.0)

    # -- the loop ------------------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        config = self.config
        # first, so that a preemption notice during start-up (restore, data, compile) is honoured, not fatal
        watcher = PreemptionWatcher() if config.checkpoint.save_on_preemption else None
        train_iter, make_val = make_data_iterators(config, config.seed, self.factory.abstract, self.mesh)
        manager = ckpt_lib.CheckpointManager(
            self.workdir / "checkpoints",
            max_to_keep=config.checkpoint.keep,
            save_interval_steps=config.checkpoint.every_steps,
            async_save=config.checkpoint.async_save,
        )
        restored = manager.restore_latest(self.abstract_state)
        if restored is None:
            state, start = self.init_state(), 0
            logging.info("starting from scratch in %s", self.workdir)
        else:
            state, start = restored.state, restored.step
            if restored.data_state is not None:
                train_iter.set_state(restored.data_state)
            logging.info("resumed from step %d in %s", start, self.workdir)
            print(f"resumed from checkpoint step {start}", flush=True)
        # config.json + processor files in the workdir: `hf export WORKDIR OUT` and ViRL's init_from need nothing else
        pixels = {"min_pixels": config.data.min_pixels, "max_pixels": config.data.max_pixels}
        write_model_files(self.workdir, self.factory.model_config, self.factory.processor(**pixels))
        writer = metrics_lib.MetricsWriter(
            self.workdir, total_steps=config.num_steps, start_step=start, progress=config.progress
        )
        assembler = data_lib.BatchAssembler(train_iter, self.mesh, accum_steps=self.accum)
        peak = metrics_lib.device_peak_flops()
        summary: dict[str, Any] = {"start_step": start, "preempted": False}
        last_time, tokens_since, steps_since = time.perf_counter(), 0, 0
        step = start
        try:
            while step < config.num_steps:
                batch = next(assembler)
                tokens = int(np.prod(batch["input_ids"].shape))
                state, metrics = self.train_step(state, batch)
                step += 1
                tokens_since, steps_since = tokens_since + tokens, steps_since + 1
                if step % config.log_every == 0 or step == config.num_steps:
                    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    now = time.perf_counter()
                    if step - steps_since == start:  # this window includes compilation: not a throughput
                        values["compile_and_first_steps_s"] = now - last_time
                    else:
                        values["tokens_per_s"] = tokens_since / (now - last_time)
                        values["mfu"] = metrics_lib.mfu(
                            values["tokens_per_s"], self.flops_per_token, self.mesh.size, peak
                        )
                    last_time, tokens_since, steps_since = now, 0, 0
                    if config.eval_every and make_val is not None and step % config.eval_every == 0:
                        values["val_loss"] = self.validate(state["params"], make_val, config.eval_steps)
                        last_time = time.perf_counter()
                    writer.write(step, values)
                    summary["last"] = values
                else:
                    writer.advance(step)
                preempted = watcher is not None and (watcher.requested or manager.reached_preemption(step))
                if preempted or step == config.num_steps:
                    manager.save(step, state, train_iter.get_state(), force=True)
                    if preempted:
                        logging.warning("preemption notice: saved step %d, exiting", step)
                        print(f"preempted: saved checkpoint at step {step}", flush=True)
                        summary["preempted"] = True
                        break
                else:
                    manager.save(step, state, train_iter.get_state())
        finally:
            manager.close()
            writer.close()
            if watcher is not None:
                watcher.restore()
        summary["step"] = step
        return summary


class _QuietOrbax(std_logging.Filter):
    """Orbax logs every save phase at INFO; keep its warnings and errors only."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def quiet_orbax_logs() -> None:
    handler_filter = _QuietOrbax()
    for handler in std_logging.getLogger().handlers + std_logging.getLogger("absl").handlers:
        if not any(isinstance(f, _QuietOrbax) for f in handler.filters):
            handler.addFilter(handler_filter)


def run(config: ml_collections.ConfigDict) -> None:
    """Entry point of the `sft` job."""
    quiet_orbax_logs()
    trainer = SFTTrainer(config)
    summary = trainer.fit()
    print(f"sft finished at step {summary['step']} (started at {summary['start_step']})", flush=True)
