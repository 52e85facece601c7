"""SFT trainer behaviour in one process on the 8 fake CPU devices, with the tiny Qwen2.5-VL on batches of the real
Grain SFT pipeline: sharded step == single-device step, learning, vision-tower freezing, metrics, restore onto a
different mesh shape, fallback from a corrupt checkpoint. Gradient accumulation is checked exactly (SGD) on the
trainer's small text-only stand-in model, where a fresh compile is cheap."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from configs import sft as sft_config
from vinci_jax import sharding
from vinci_jax.train import checkpoint as ckpt_lib
from vinci_jax.train import data as data_lib
from vinci_jax.train import optimizer as opt_lib
from vinci_jax.train import train_state as ts
from vinci_jax.train.sft import SFTTrainer, make_data_iterators
from vinci_jax.train.sft_step import make_train_step
from vinci_jax.train.standin import StandInConfig, StandInTextLM, SyntheticSFTIterator

SEQ, BATCH = 32, 8


@pytest.fixture(autouse=True)
def _exact_matmuls():
    with jax.default_matmul_precision("highest"):
        yield


def _mesh(shape: dict):
    """A mesh over the first prod(shape) devices (make_mesh alone insists on using every device)."""
    size = int(np.prod([v for v in shape.values()]))
    return sharding.make_mesh(shape, devices=jax.devices()[:size])


def _batches(n: int, batch: int = BATCH, seed: int = 3) -> list[dict]:
    it = SyntheticSFTIterator(global_batch_size=batch, seq_len=SEQ, vocab_size=64, seed=seed)
    return [next(it) for _ in range(n)]


def _tiny_config(workdir: Path, corpus: Path, **overrides):
    config = sft_config.get_config("tiny")
    config.workdir = str(workdir)
    config.data.train_path = str(corpus)
    config.data.seq_len = 128  # the test corpus has short samples
    config.progress = False
    return _override(config, overrides)


def _override(config, overrides: dict):
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return config


RUN_MESH = {"data": 2, "fsdp": 4}
RUN_STEPS = 8


@pytest.fixture(scope="module")
def tiny_run(sft_corpus, tmp_path_factory):
    """A short run of the tiny preset (vision tower frozen) sharded over a (data 2, fsdp 4) mesh."""
    workdir = tmp_path_factory.mktemp("sft_tiny")
    config = _tiny_config(
        workdir,
        sft_corpus,
        num_steps=RUN_STEPS,
        eval_every=4,
        mesh=RUN_MESH,
        **{"checkpoint.every_steps": 4, "model.freeze_vision": True, "optimizer.schedule": "constant"},
    )
    trainer = SFTTrainer(config, _mesh(RUN_MESH))
    summary = trainer.fit()
    return workdir, config, trainer, summary


def test_loss_decreases_and_metrics_are_written(tiny_run):
    workdir, _, _, summary = tiny_run
    assert summary["step"] == RUN_STEPS and not summary["preempted"]
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, RUN_STEPS + 1))
    assert records[0]["loss"] == pytest.approx(np.log(151936), abs=0.3)  # untrained: near uniform over the vocab
    assert records[-1]["loss"] < records[0]["loss"] - 0.8
    assert all(r["mfu"] is None for r in records[1:])  # CPU: unknown peak FLOP/s
    assert all(r["tokens_per_s"] > 0 and r["grad_norm"] > 0 for r in records[1:])
    assert records[3]["val_loss"] > records[7]["val_loss"]
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [4, 8]


def _restore(workdir: Path, config, mesh_shape: dict):
    trainer = SFTTrainer(config, _mesh(mesh_shape))
    manager = ckpt_lib.CheckpointManager(workdir / "checkpoints", save_interval_steps=4)
    restored = manager.restore_latest(trainer.abstract_state)
    manager.close()
    return trainer, restored


def test_frozen_vision_tower_is_unchanged_and_the_merger_trains(tiny_run):
    workdir, config, trainer, _ = tiny_run
    initial = jax.device_get(trainer.factory.params())  # same seed: the weights the run started from
    _, restored = _restore(workdir, config, RUN_MESH)
    final = jax.device_get(restored.state["params"])
    np.testing.assert_array_equal(
        final["visual"]["blocks"][0]["attn"]["qkv"]["kernel"], initial["visual"]["blocks"][0]["attn"]["qkv"]["kernel"]
    )
    assert not np.allclose(final["visual"]["merger"]["mlp_0"]["kernel"], initial["visual"]["merger"]["mlp_0"]["kernel"])
    assert not np.allclose(
        final["model"]["layers"][0]["mlp"]["up_proj"]["kernel"],
        initial["model"]["layers"][0]["mlp"]["up_proj"]["kernel"],
    )


def test_restore_onto_a_different_mesh_shape(tiny_run):
    workdir, config, _, _ = tiny_run
    trainer, restored = _restore(workdir, config, {"data": 1, "fsdp": 2, "tensor": 4})
    assert restored.step == RUN_STEPS and int(restored.state["step"]) == RUN_STEPS
    assert restored.data_state is not None
    kernel = restored.state["params"]["model"]["layers"][0]["mlp"]["up_proj"]["kernel"]
    assert kernel.sharding.mesh.shape == {"data": 1, "fsdp": 2, "tensor": 4}
    assert (
        kernel.sharding.spec == trainer.state_shardings["params"]["model"]["layers"][0]["mlp"]["up_proj"]["kernel"].spec
    )
    assert not kernel.sharding.is_fully_replicated
    _, reference = _restore(workdir, config, RUN_MESH)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.state), jax.device_get(reference.state))


def test_corrupt_latest_checkpoint_falls_back_with_a_warning(tiny_run, tmp_path):
    workdir, config, trainer, _ = tiny_run
    copy = tmp_path / "checkpoints"
    shutil.copytree(workdir / "checkpoints", copy)
    for f in (copy / "8" / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"\x00garbage")
    manager = ckpt_lib.CheckpointManager(copy, save_interval_steps=4)
    with pytest.warns(RuntimeWarning, match="step 8 .* falling back"):
        restored = manager.restore_latest(trainer.abstract_state)
    assert restored.step == 4 and int(restored.state["step"]) == 4
    # the damaged step is moved aside, so training can save step 8 again
    assert any(p.name.startswith("corrupt-8-") for p in copy.iterdir())
    assert manager.save(8, restored.state, restored.data_state, force=True)
    manager.close()
    assert (copy / "8" / "state").is_dir()


def test_sharded_step_equals_single_device_step(tiny_run):
    _, config, sharded, _ = tiny_run
    single = SFTTrainer(config, _mesh({"data": 1}))
    results = []
    for trainer in (single, sharded):  # `sharded` reuses the step the run compiled on the (data 2, fsdp 4) mesh
        # the same rows; the vision inputs come in one block per batch shard of the trainer's mesh
        train_iter, _ = make_data_iterators(config, config.seed, trainer.factory.abstract, trainer.mesh)
        batches = [data_lib.to_trainer_convention(next(train_iter)) for _ in range(2)]
        assert batches[0]["vision_inputs"].groups == (1 if trainer is single else 2)
        state, losses = trainer.init_state(), []
        for local in batches:
            batch = data_lib.to_global(local, data_lib.batch_shardings(local, trainer.mesh))
            state, metrics = trainer.train_step(state, batch)
            losses.append(float(metrics["loss"]))
        results.append((losses, jax.device_get(state["params"])))
    kernel = state["params"]["model"]["layers"][0]["mlp"]["up_proj"]["kernel"]
    assert len(kernel.sharding.device_set) == 8 and not kernel.sharding.is_fully_replicated
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), results[1][1], results[0][1])


def test_grad_accumulation_equals_big_batch():
    model = StandInTextLM(StandInConfig.tiny(), rngs=nnx.Rngs(0))
    split = ts.split_model(model)
    sgd = optax.sgd(1.0)  # update == -gradient, so the parameters expose the gradient exactly
    trainable = opt_lib.trainable_mask(split.params, [])
    big = data_lib.to_trainer_convention(_batches(1, batch=8)[0])
    # micro-batches with different label-token counts: the mean is over all tokens, not a mean of means
    big["loss_mask"][:4, : SEQ // 2] = 0.0

    def rows(lo: int, hi: int) -> dict:
        return {k: (v[:, lo:hi] if k == "position_ids" else v[lo:hi]) for k, v in big.items()}

    micro = data_lib.stack_micro_batches([rows(0, 4), rows(4, 8)])
    schedule = optax.constant_schedule(1.0)
    state = ts.init_train_state(split.params, sgd)
    big_state, big_metrics = jax.jit(make_train_step(split, sgd, schedule, trainable, accum_steps=1))(state, big)
    acc_state, acc_metrics = jax.jit(make_train_step(split, sgd, schedule, trainable, accum_steps=2))(state, micro)
    np.testing.assert_allclose(acc_metrics["loss"], big_metrics["loss"], rtol=1e-6)
    assert float(acc_metrics["loss_tokens"]) == float(big_metrics["loss_tokens"]) == big["loss_mask"].sum()
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8), acc_state["params"], big_state["params"]
    )
