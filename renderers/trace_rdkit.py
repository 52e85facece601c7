"""Instrumentation of which molecules RDKit code draws, for the molecule benchmarks (validity, Tanimoto).

Installed inside a sandboxed job process (see `renderers.trace_run`) before the job's code runs. Every drawing entry
point (Draw.MolToImage / MolToFile / MolsToGridImage / MolGridImage, MolDraw2D.DrawMolecule / DrawMolecules,
rdMolDraw2D.PrepareAndDrawMolecule) records the canonical SMILES of the molecules it is given (outermost call
only); every MolFromSmiles / MolFromSmarts / MolFromMolBlock call records the SMILES it produced (None when RDKit
rejected the input), so a script that parses a molecule but draws it some other way is still measured.
`collect()` -> {"drawn": [smiles...], "parsed": [smiles or None...]}.
"""

from __future__ import annotations

import functools
from typing import Any

_state: dict[str, Any] = {"depth": 0, "drawn": [], "parsed": []}


def _smiles(mol: Any) -> str | None:
    from rdkit import Chem

    if mol is None:
        return None
    try:
        return Chem.MolToSmiles(mol)
    except Exception:  # noqa: BLE001 - a half-built molecule is recorded as unreadable
        return None


def _molecules(value: Any) -> list[Any]:
    from rdkit import Chem

    if isinstance(value, Chem.Mol):
        return [value]
    if isinstance(value, (list, tuple)):
        return [m for m in value if isinstance(m, Chem.Mol)]
    return []


def _wrap_draw(owner: Any, name: str, mol_arg: int) -> None:
    original = getattr(owner, name, None)
    if original is None:
        return

    def traced(*args: Any, **kwargs: Any) -> Any:
        if _state["depth"] == 0:
            value = args[mol_arg] if len(args) > mol_arg else kwargs.get("mol", kwargs.get("mols"))
            _state["drawn"].extend(_smiles(m) for m in _molecules(value))
        _state["depth"] += 1
        try:
            return original(*args, **kwargs)
        finally:
            _state["depth"] -= 1

    try:
        functools.update_wrapper(traced, original)
    except (AttributeError, TypeError):  # Boost.Python functions lack some attributes
        pass
    setattr(owner, name, traced)


def _wrap_parse(owner: Any, name: str) -> None:
    original = getattr(owner, name, None)
    if original is None:
        return

    def traced(*args: Any, **kwargs: Any) -> Any:
        mol = original(*args, **kwargs)
        if _state["depth"] == 0:
            _state["parsed"].append(_smiles(mol))
        return mol

    setattr(owner, name, traced)


def install() -> None:
    """Patch RDKit in this process (a no-op when RDKit is not installed)."""
    try:
        from rdkit import Chem
        from rdkit.Chem import Draw
        from rdkit.Chem.Draw import rdMolDraw2D
    except ImportError:
        return
    for name in ("MolFromSmiles", "MolFromSmarts", "MolFromMolBlock"):
        _wrap_parse(Chem, name)
    for name in ("MolToImage", "MolToFile", "MolsToGridImage", "MolGridImage"):
        _wrap_draw(Draw, name, 0)
    _wrap_draw(rdMolDraw2D.MolDraw2D, "DrawMolecule", 1)
    _wrap_draw(rdMolDraw2D.MolDraw2D, "DrawMolecules", 1)
    _wrap_draw(rdMolDraw2D, "PrepareAndDrawMolecule", 1)


def collect() -> dict[str, Any]:
    return {"drawn": list(_state["drawn"]), "parsed": list(_state["parsed"])}
