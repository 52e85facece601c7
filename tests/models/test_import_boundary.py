"""`vinci_jax/models` never imports `vinci_jax/hf`: hf (loaders, exporters, checks) sits on top of the models, so an
import back up (even a lazy one inside a function, such as the loader re-exports the model packages once had)
would tie every model to safetensors and the HF tables. Callers reach the loaders through `vinci_jax.hf` or the
family registry (`ModelFamily.load`, which names them as data)."""

from __future__ import annotations

import ast
from pathlib import Path

import vinci_jax

PACKAGE = Path(vinci_jax.__file__).parent
MODELS = PACKAGE / "models"


def _package_of(path: Path) -> list[str]:
    """The dotted package a file belongs to (what its relative imports start from)."""
    return list(path.relative_to(PACKAGE.parent).parent.parts)


def hf_imports(source: str, package: list[str]) -> list[str]:
    """'line: module' for every import of vinci_jax.hf in `source` (a file of `package`): import statements
    anywhere, module level or inside a function, relative ones resolved; importlib.import_module / __import__ of
    a literal name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *filter(None, (node.module or "").split("."))])
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        if any(n == "vinci_jax.hf" or n.startswith("vinci_jax.hf.") for n in names):
            found.append(f"{node.lineno}: {names[0]}")
    return found


def test_models_never_import_hf():
    files = sorted(MODELS.rglob("*.py"))
    assert len(files) > 20  # the walk sees every model package
    offenders = {
        str(f.relative_to(PACKAGE)): hits for f in files if (hits := hf_imports(f.read_text(), _package_of(f)))
    }
    assert not offenders, offenders


def test_the_walk_catches_every_form():
    """Module-level, relative, lazy (inside a function) and importlib imports of hf are all reported; other
    imports are not."""
    source = (
        "import vinci_jax.hf.loader\n"
        "from ...hf import qwen3_vl\n"
        "from vinci_jax import hf\n"
        "def late():\n"
        "    from vinci_jax.hf.qwen2_5_vl import load_qwen2_5_vl\n"
        "    return importlib.import_module('vinci_jax.hf.export')\n"
        "from vinci_jax.models import layers\n"
        "from .. import attention\n"
        "import vinci_jax.hfx\n"
    )
    hits = hf_imports(source, ["vinci_jax", "models", "qwen2_5_vl"])
    assert [int(h.split(":")[0]) for h in hits] == [1, 2, 3, 5, 6], hits
