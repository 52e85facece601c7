"""ViRL's init_from of a training checkpoint (Orbax) or an HF dir puts every parameter straight on its sharding.

A watcher thread polls the live device arrays during `load_policy` over 8 fake devices and records the largest
number of bytes each device held: it stays near the shard size, never near the whole parameter set (the path it
replaces put every parameter on device 0, then resharded).
"""

import json
import threading

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from vinci_jax import sharding
from vinci_jax.hf import loader
from vinci_jax.hf.loader import path_str
from vinci_jax.hf.qwen2_5_vl import export_qwen2_5_vl
from vinci_jax.models import families
from vinci_jax.models.qwen2_5_vl import Qwen25VLConfig, Qwen25VLForConditionalGeneration
from vinci_jax.policy import load_policy, restore_targets


def _device_bytes(arrays, skip: set[int]) -> dict:
    """Bytes per device of the given arrays, from their shardings (no per-shard array objects are created)."""
    held: dict = {}
    for array in arrays:
        if id(array) in skip or array.is_deleted():
            continue
        shard = int(np.prod(array.sharding.shard_shape(array.shape))) * array.dtype.itemsize
        for device in array.sharding.device_set:
            held[device] = held.get(device, 0) + shard
    return held


class PeakWatcher:
    """Polls `jax.live_arrays()` until stopped; `peak[device]` = most bytes seen on it at one poll."""

    def __init__(self):
        self.skip = {id(a) for a in jax.live_arrays()}
        self.peak: dict = {}
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for device, held in _device_bytes(jax.live_arrays(), self.skip).items():
                self.peak[device] = max(self.peak.get(device, 0), held)
            self.polls += 1
            self._stop.wait(0.002)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()


def _check_sharded_load(path, mesh, expected, total):
    with PeakWatcher() as watch:
        model, _ = load_policy(path, mesh=mesh, dtype=jnp.float32)
    loaded = nnx.state(model, nnx.Param)
    final = _device_bytes(jax.tree.leaves(loaded), set())
    assert watch.polls > 1 and len(final) == 8
    shard = max(final.values())
    assert shard < total / 4  # the load itself is sharded: about 1/8 of the set per device, plus small replicas
    for device in jax.devices():  # a restore may briefly hold a shard twice (read + cast); the whole set is 8 shards
        assert watch.peak.get(device, 0) <= 2 * shard, (path, device, watch.peak.get(device), shard, total)
    targets = dict(nnx.to_flat_state(sharding.state_shardings(loaded, mesh)))
    for key, variable in nnx.to_flat_state(loaded):
        value = variable.get_value()
        assert value.sharding == targets[key]
        np.testing.assert_array_equal(np.asarray(value), expected[path_str(key)])
    return model


def test_init_from_restores_into_target_shardings(tmp_path):
    config = Qwen25VLConfig.tiny()  # the real 151,936-token vocabulary: embedding and head are most of the bytes
    source = nnx.state(Qwen25VLForConditionalGeneration(config, rngs=nnx.Rngs(0)), nnx.Param)
    expected = {path_str(k): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(source)}
    params = source.to_pure_dict()
    total = sum(v.nbytes for v in expected.values())
    # the trainer's layout: WORKDIR/checkpoints/<step>/state = {params, opt_state, step}, config.json in WORKDIR
    manager = ocp.CheckpointManager(tmp_path / "checkpoints", item_names=("state",))
    state = {"params": params, "opt_state": {"mu": params}, "step": jnp.int32(3)}
    manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
    manager.wait_until_finished()
    (tmp_path / "config.json").write_text(json.dumps(config.to_hf(dtype="float32")))
    del source, params, state
    jax.clear_caches()

    mesh = sharding.make_mesh({"fsdp": 8})
    model = _check_sharded_load(tmp_path, mesh, expected, total)
    # the same parameters as an HF dir: the streaming loader places each tensor's slices on their devices
    hf_dir = export_qwen2_5_vl(model, tmp_path / "hf", dtype="float32")
    del model
    _check_sharded_load(hf_dir, mesh, expected, total)


@pytest.mark.parametrize("family,preset", [("qwen3_vl", "8b"), ("qwen2_5_vl", "7b"), ("qwen2_5_vl", "32b")])
def test_full_size_load_plan_puts_about_one_eighth_on_each_device(family, preset):
    """The restore plan of a real-size model (abstract: shapes only, nothing is allocated) over 8 devices.

    Both loads (Orbax `restore_targets` and the HF loader's per-tensor placement) write every parameter into its
    sharding; at 8B the whole set is ~35 GB, so any large parameter planned onto one device, or replicated,
    would show here as a device holding far more than its eighth."""
    fam = families.get_family(family)
    config = fam.preset(preset)
    params = nnx.state(fam.abstract_model(config, jnp.float32, jnp.float32), nnx.Param)
    mesh = sharding.make_mesh({"fsdp": 8})
    plan = restore_targets(params, mesh)
    held: dict = {}
    total = replicated = 0
    for key, variable in nnx.to_flat_state(params):
        value = variable.get_value()
        target = plan[path_str(key)]
        assert target == loader._target_sharding(variable, mesh)  # the HF path places by the same rule
        nbytes = int(np.prod(value.shape)) * value.dtype.itemsize
        shard = int(np.prod(target.shard_shape(value.shape))) * value.dtype.itemsize
        total += nbytes
        if shard == nbytes:
            replicated += nbytes
            assert nbytes < 2**20, f"{path_str(key)} {value.shape}: {nbytes / 2**20:.0f} MiB on every device"
        for device in target.device_set:
            held[device] = held.get(device, 0) + shard
    assert total > 5e9 * (4 if preset == "32b" else 1)  # really the full-size model (float32)
    assert len(held) == 8
    assert replicated < 1e-3 * total  # only norms and biases are whole on every device
    assert max(held.values()) <= total / 8 * 1.01, {d.id: b / 2**30 for d, b in held.items()}
