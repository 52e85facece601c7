"""Lets torchvision import in the vLLM venv, whose torch is a CPU build that PyPI's torchvision ops cannot link to.

torchvision then fails at import registering fake kernels for `torchvision::nms` / `qnms`, whose schemas its
missing compiled library would have defined. vLLM's Qwen-VL code (and transformers' Qwen-VL image processor) import
torchvision only for Python image transforms. This file is run at interpreter start-up by a .pth file that
`make setup-vllm` writes into .venv-vllm (vLLM also inspects models in subprocesses, which must get it too). It
only installs an import hook: on the first `import torchvision`, if the compiled ops do not load, the two schemas
are defined (without kernels: calling them still fails loudly). Standalone on purpose: no vinci_jax import.
"""

import importlib.abc
import importlib.util
import sys
from pathlib import Path


class _TorchvisionSchemas(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # noqa: ANN001 - importlib protocol
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("torchvision")
        if spec is not None and spec.origin is not None:
            import torch

            library = next(iter(sorted(Path(spec.origin).parent.glob("_C*.so"))), None)
            try:
                if library is None:
                    raise OSError("torchvision has no _C library")
                torch.ops.load_library(str(library))
            except OSError:
                if hasattr(torch, "_vinci_torchvision_schemas"):
                    return None
                schemas = torch.library.Library("torchvision", "FRAGMENT")
                for op in ("nms", "qnms"):
                    schemas.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                torch._vinci_torchvision_schemas = schemas  # kept alive: a dropped Library drops its definitions
        return None  # the regular finders import it


if not any(isinstance(f, _TorchvisionSchemas) for f in sys.meta_path) and "torchvision" not in sys.modules:
    sys.meta_path.insert(0, _TorchvisionSchemas())
