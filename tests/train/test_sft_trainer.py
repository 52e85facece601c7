"""SFT trainer behaviour in one process on the 8 fake CPU devices: sharding parity, accumulation, learning,
checkpoint restore onto another mesh, fallback from a corrupt checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from configs import sft as sft_config
from vinci_jax import sharding
from vinci_jax.train import checkpoint as ckpt_lib
from vinci_jax.train import data as data_lib
from vinci_jax.train import optimizer as opt_lib
from vinci_jax.train import train_state as ts
from vinci_jax.train.sft import SFTTrainer
from vinci_jax.train.sft_step import make_train_step
from vinci_jax.train.standin import StandInConfig, StandInTextLM, SyntheticSFTIterator

SEQ, BATCH = 32, 8


@pytest.fixture(autouse=True)
def _exact_matmuls():
    with jax.default_matmul_precision("highest"):
        yield


def _config(workdir: Path, **overrides):
    config = sft_config.get_config("standin")
    config.workdir = str(workdir)
    config.data.seq_len = SEQ
    config.data.global_batch_size = BATCH
    config.progress = False
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return config


def _mesh(shape: dict):
    """A mesh over the first prod(shape) devices (make_mesh alone insists on using every device)."""
    size = int(np.prod([v for v in shape.values()]))
    return sharding.make_mesh(shape, devices=jax.devices()[:size])


def _batches(n: int, batch: int = BATCH, seed: int = 3) -> list[dict]:
    it = SyntheticSFTIterator(global_batch_size=batch, seq_len=SEQ, vocab_size=64, seed=seed)
    return [next(it) for _ in range(n)]


def _two_steps(mesh_shape: dict, batches: list[dict]):
    config = _config(Path("/unused"), mesh=mesh_shape)
    mesh = _mesh(mesh_shape)
    trainer = SFTTrainer(config, mesh)
    state = trainer.init_state()
    losses = []
    for local in batches:
        shardings = data_lib.batch_shardings(local, mesh)
        state, metrics = trainer.train_step(state, data_lib.to_global(local, shardings))
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state["params"]), state


def test_sharded_step_equals_single_device_step():
    batches = _batches(2)
    single_losses, single_params, _ = _two_steps({"data": 1}, [dict(b) for b in batches])
    # one device mesh uses only the first device
    sharded_losses, sharded_params, state = _two_steps({"data": 2, "fsdp": 2, "tensor": 2}, batches)
    wq = state["params"]["layers"][0]["qkv"]
    assert len(wq.sharding.device_set) == 8 and not wq.sharding.is_fully_replicated
    np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6), sharded_params, single_params)


def test_grad_accumulation_equals_big_batch():
    model = StandInTextLM(StandInConfig.tiny(), rngs=__import__("flax").nnx.Rngs(0))
    split = ts.split_model(model)
    sgd = optax.sgd(1.0)  # update == -gradient, so parameters expose the gradient exactly
    trainable = opt_lib.trainable_mask(split.params, [])
    big = data_lib.to_trainer_convention(_batches(1, batch=8)[0])
    # micro-batches with different label-token counts: the mean must be over all tokens, not a mean of means
    big["loss_mask"][:4, : SEQ // 2] = 0.0
    micro = data_lib.stack_micro_batches(
        [
            {k: v[:4] for k, v in big.items() if k != "position_ids"} | {"position_ids": big["position_ids"][:, :4]},
            {k: v[4:] for k, v in big.items() if k != "position_ids"} | {"position_ids": big["position_ids"][:, 4:]},
        ]
    )
    schedule = optax.constant_schedule(1.0)
    state = ts.init_train_state(split.params, sgd)
    one = jax.jit(make_train_step(split, sgd, schedule, trainable, accum_steps=1))
    two = jax.jit(make_train_step(split, sgd, schedule, trainable, accum_steps=2))
    big_state, big_metrics = one(state, big)
    acc_state, acc_metrics = two(state, micro)
    np.testing.assert_allclose(acc_metrics["loss"], big_metrics["loss"], rtol=1e-6)
    assert float(acc_metrics["loss_tokens"]) == float(big_metrics["loss_tokens"]) == big["loss_mask"].sum()
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8), acc_state["params"], big_state["params"]
    )


def test_freezing_keeps_frozen_params_and_drops_their_optimizer_state():
    config = _config(
        Path("/unused"), **{"model.freeze": "^layers/0/", "optimizer.weight_decay": 0.1, "optimizer.warmup_steps": 0}
    )
    mesh = _mesh({"data": 1})
    trainer = SFTTrainer(config, mesh)
    state = trainer.init_state()
    before = jax.device_get(state["params"])
    local = _batches(1)[0]
    state, _ = trainer.train_step(state, data_lib.to_global(local, data_lib.batch_shardings(local, mesh)))
    after = jax.device_get(state["params"])
    np.testing.assert_array_equal(after["layers"][0]["qkv"], before["layers"][0]["qkv"])
    assert not np.allclose(after["layers"][1]["qkv"], before["layers"][1]["qkv"])
    moments = [x.size for x in jax.tree.leaves(state["opt_state"]) if np.ndim(x) >= 1]
    trained = sum(
        x.size
        for p, x in jax.tree_util.tree_flatten_with_path(before)[0]
        if not opt_lib.path_str(p).startswith("layers/0/")
    )
    assert sum(moments) == 2 * trained  # Adam mu + nu only for trained leaves


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One short run of the stand-in preset on the default 8-device data-parallel mesh."""
    workdir = tmp_path_factory.mktemp("sft_run")
    config = _config(workdir, num_steps=24, eval_every=12, **{"checkpoint.every_steps": 8})
    summary = SFTTrainer(config).fit()
    return workdir, config, summary


def test_loss_decreases_and_metrics_are_written(trained_run):
    workdir, config, summary = trained_run
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 25))
    assert records[-1]["loss"] < records[0]["loss"] - 0.5
    assert records[0]["loss"] == pytest.approx(np.log(64), abs=0.1)  # an untrained model is uniform
    assert all(r["mfu"] is None for r in records[1:])  # CPU: unknown peak
    assert all(r["tokens_per_s"] > 0 for r in records[1:])
    assert "val_loss" in records[11] and "val_loss" in records[23]
    assert records[23]["val_loss"] < records[11]["val_loss"]
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [8, 16, 24]


def _restore(workdir: Path, config, mesh_shape: dict):
    trainer = SFTTrainer(config, _mesh(mesh_shape))
    manager = ckpt_lib.CheckpointManager(workdir / "checkpoints", save_interval_steps=8)
    restored = manager.restore_latest(trainer.abstract_state)
    manager.close()
    return trainer, restored


def test_restore_onto_a_different_mesh_shape(trained_run):
    workdir, config, _ = trained_run
    trainer, restored = _restore(workdir, config, {"data": 1, "fsdp": 4, "tensor": 2})
    assert restored.step == 24 and int(restored.state["step"]) == 24
    assert restored.data_state == {"index": 24}
    qkv = restored.state["params"]["layers"][0]["qkv"]
    assert qkv.sharding.spec == trainer.state_shardings["params"]["layers"][0]["qkv"].spec
    assert qkv.sharding.mesh.shape == {"data": 1, "fsdp": 4, "tensor": 2}
    mu = restored.state["opt_state"][1][0].mu["layers"][0]["qkv"]
    assert mu.sharding.spec == qkv.sharding.spec
    # same values as on the saving (data-parallel) mesh
    _, reference = _restore(workdir, config, {"data": 8})
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.state), jax.device_get(reference.state))
    # and training continues on the new mesh
    local = SyntheticSFTIterator(global_batch_size=BATCH, seq_len=SEQ, vocab_size=64, seed=config.seed)
    local.set_state(restored.data_state)
    batch = data_lib.to_trainer_convention(next(local))
    _, metrics = trainer.train_step(
        restored.state, data_lib.to_global(batch, data_lib.batch_shardings(batch, trainer.mesh))
    )
    assert np.isfinite(float(metrics["loss"]))


def test_corrupt_latest_checkpoint_falls_back_with_a_warning(trained_run, tmp_path):
    workdir, config, _ = trained_run
    copy = tmp_path / "checkpoints"
    shutil.copytree(workdir / "checkpoints", copy)
    for f in (copy / "24" / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"\x00garbage")
    trainer = SFTTrainer(config, _mesh({"data": 8}))
    manager = ckpt_lib.CheckpointManager(copy, save_interval_steps=8)
    with pytest.warns(RuntimeWarning, match="step 24 .* falling back"):
        restored = manager.restore_latest(trainer.abstract_state)
    assert restored.step == 16 and int(restored.state["step"]) == 16
    assert restored.data_state == {"index": 16}
    # the damaged step is moved aside, so a new save at step 24 works
    assert any(p.name.startswith("corrupt-24-") for p in copy.iterdir())
    assert manager.save(24, restored.state, {"index": 24}, force=True)
    manager.close()
    assert (copy / "24" / "state").is_dir()
