"""User-given paths as `etils.epath.Path`, so `gs://bucket/x` stays a bucket URI on every host.

`pathlib.Path("gs://bucket/x")` silently becomes the local directory `gs:/bucket/x`; every path a user passes
(workdir, data dirs, init_from, hf_dir, export and report dirs) goes through `as_path` instead. Local paths behave as
before. Remote paths are read and written through fsspec (gcsfs honours STORAGE_EMULATOR_HOST); Orbax's arrays go
through tensorstore (TENSORSTORE_GCS_HTTP_URL) and ArrayRecord reads through google-cloud-cpp
(CLOUD_STORAGE_EMULATOR_ENDPOINT), so one emulator address serves all of them (`emulator_env`).

gcsfs caches every directory listing for the life of the process by default; another host's (or process's) new
checkpoint step would stay invisible to a reader that listed the directory before. Importing this module turns that
cache off for gs:// (like tf.io.gfile, which Orbax uses elsewhere: every listing asks the bucket).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

from etils import epath

PathLike = str | os.PathLike


def _no_stale_bucket_listings() -> None:
    """Default gcsfs instances (epath's included) to uncached listings; an explicit argument still wins."""
    import fsspec.config

    fsspec.config.conf.setdefault("gcs", {}).setdefault("use_listings_cache", False)


_no_stale_bucket_listings()


def as_path(path: PathLike) -> epath.Path:
    """`path` as an epath.Path (local paths stay plain local paths; `gs://...` stays a bucket URI)."""
    return epath.Path(path)


def is_remote(path: PathLike) -> bool:
    """Whether `path` names an object store (`gs://`, `s3://`, `memory://`, ...) rather than the local disk."""
    return "://" in os.fspath(path)


def join(path: PathLike, *parts: str) -> str:
    """`path/part/...` as a string, keeping the scheme of a URI intact."""
    return os.fspath(as_path(path).joinpath(*parts))


def write_text_atomic(path: PathLike, text: str) -> None:
    """Replace `path` with `text` so a reader never sees half a file (object stores replace objects whole)."""
    target = as_path(path)
    if is_remote(target):
        target.write_text(text)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, target)


def upload_tree(local_dir: PathLike, dest: PathLike) -> None:
    """Copy the files of a local directory into `dest` (a local dir or a bucket prefix), replacing same names."""
    dest_path = as_path(dest)
    dest_path.mkdir(parents=True, exist_ok=True)
    for root, _, files in os.walk(local_dir):
        rel = os.path.relpath(root, local_dir)
        target_dir = dest_path if rel == "." else dest_path / rel
        target_dir.mkdir(parents=True, exist_ok=True)
        for name in sorted(files):
            epath.Path(os.path.join(root, name)).copy(target_dir / name, overwrite=True)


@contextlib.contextmanager
def local_dir_for(dest: PathLike) -> Iterator[str]:
    """A local directory whose files end up in `dest`: `dest` itself when local, else a temporary directory
    uploaded on success (for writers that need a real file system, e.g. `save_pretrained`, safetensors)."""
    if not is_remote(dest):
        os.makedirs(os.fspath(dest), exist_ok=True)
        yield os.fspath(dest)
        return
    staging = tempfile.mkdtemp(prefix="vinci-upload-")
    try:
        yield staging
        upload_tree(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def emulator_env(endpoint: str) -> dict[str, str]:
    """Environment that points gcsfs, google-cloud-storage, tensorstore and ArrayRecord at a GCS emulator."""
    return {
        "STORAGE_EMULATOR_HOST": endpoint,
        "TENSORSTORE_GCS_HTTP_URL": endpoint,
        "CLOUD_STORAGE_EMULATOR_ENDPOINT": endpoint,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
        "GOOGLE_CLOUD_PROJECT": "vinci-test",
        # gcsfs' hierarchical-namespace probe asks the Storage Control API, which emulators lack: one warning and a
        # failed lookup per call otherwise (read when gcsfs is imported)
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }


_LOCAL_COPIES: dict[str, str] = {}


def local_copy(path: PathLike) -> str:
    """A local directory with the top-level files of `path` (an HF dir: config, safetensors, tokenizer files):
    `path` itself when local, else a download, once per process, for readers that need real files. Subdirectories
    (a workdir's checkpoints) are not copied."""
    if not is_remote(path):
        return os.fspath(path)
    key = os.fspath(path)
    if key not in _LOCAL_COPIES:
        target = tempfile.mkdtemp(prefix="vinci-download-")
        for item in as_path(path).iterdir():
            if not item.is_dir():
                item.copy(epath.Path(os.path.join(target, item.name)), overwrite=True)
        _LOCAL_COPIES[key] = target
    return _LOCAL_COPIES[key]
