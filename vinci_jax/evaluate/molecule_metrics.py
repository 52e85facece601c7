"""Molecule metrics: which molecule RDKit code draws, its validity, and Morgan-fingerprint Tanimoto similarity.

The molecule is first read statically from the code (`static_smiles`: string literals passed to MolFromSmiles,
directly or through a module-level name), which executes nothing; when that is ambiguous or impossible the
sandboxed traced run's record (renderers.trace_rdkit: molecules actually drawn) is used. ChemDraw-style benchmarks
(e.g. the molecule tasks in VinciCoder's evaluation) report:
- validity: RDKit parses the drawn molecule (1) or not (0);
- tanimoto: Tanimoto similarity of Morgan fingerprints (radius 2, 2048 bits) to the gold molecule, 0 if invalid.
"""

from __future__ import annotations

import ast

MORGAN_RADIUS = 2
MORGAN_BITS = 2048
MOLECULE_METRICS = ("validity", "tanimoto")
_PARSERS = ("MolFromSmiles", "MolFromSmarts")


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def static_smiles(code: str) -> str | None:
    """The one SMILES string the code parses, read without running it; None when absent, dynamic or ambiguous."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return None
    constants: dict[str, str | None] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            value = node.value
            is_str = isinstance(value, ast.Constant) and isinstance(value.value, str)
            constants[name] = value.value if is_str and name not in constants else None  # reassigned: unknown
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _call_name(node) in _PARSERS and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append(arg.value)
            elif isinstance(arg, ast.Name) and constants.get(arg.id):
                found.append(constants[arg.id])  # type: ignore[arg-type]
            else:
                return None
    return found[0] if len(set(found)) == 1 else None


def canonical(smiles: str | None) -> str | None:
    """RDKit canonical SMILES, or None when RDKit cannot parse it."""
    if not smiles:
        return None
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    return None if mol is None else Chem.MolToSmiles(mol)


def tanimoto(smiles_a: str, smiles_b: str) -> float:
    from rdkit import Chem, DataStructs
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=MORGAN_RADIUS, fpSize=MORGAN_BITS)
    fa = generator.GetFingerprint(Chem.MolFromSmiles(smiles_a))
    fb = generator.GetFingerprint(Chem.MolFromSmiles(smiles_b))
    return float(DataStructs.TanimotoSimilarity(fa, fb))


def drawn_smiles(code: str, trace: dict | None) -> tuple[str | None, str]:
    """(SMILES of the drawn molecule, how it was found: "static" | "trace" | "none")."""
    smiles = static_smiles(code)
    if smiles is not None:
        return smiles, "static"
    record = (trace or {}).get("rdkit") or {}
    for key in ("drawn", "parsed"):
        values = [s for s in record.get(key, []) if s]
        if values:
            return values[-1], "trace"
    return None, "none"


def molecule_scores(gold_smiles: str | None, pred_smiles: str | None) -> dict[str, float | None]:
    gold = canonical(gold_smiles)
    pred = canonical(pred_smiles)
    if gold is None:
        return {"validity": float(pred is not None), "tanimoto": None}
    if pred is None:
        return {"validity": 0.0, "tanimoto": 0.0}
    return {"validity": 1.0, "tanimoto": 1.0 if gold == pred else tanimoto(gold, pred)}
