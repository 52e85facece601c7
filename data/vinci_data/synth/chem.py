"""RDKit molecule drawings from a list of common SMILES, drawn by RDKit's Cairo drawer into a PNG file.

Difficulty follows molecule size (small, medium, large) and adds highlighted atoms and a legend at level 2.
"""

from __future__ import annotations

import random

from vinci_data.synth.common import Domain, Spec, edited

# (name, SMILES) grouped by size; all parse with RDKit.
SMALL: tuple[tuple[str, str], ...] = (
    ("benzene", "c1ccccc1"),
    ("ethanol", "CCO"),
    ("acetic acid", "CC(=O)O"),
    ("phenol", "Oc1ccccc1"),
    ("toluene", "Cc1ccccc1"),
    ("pyridine", "c1ccncc1"),
    ("acetone", "CC(=O)C"),
    ("glycine", "NCC(=O)O"),
    ("cyclohexane", "C1CCCCC1"),
    ("furan", "c1ccoc1"),
    ("urea", "NC(=O)N"),
    ("propanol", "CCCO"),
    ("alanine", "CC(N)C(=O)O"),
    ("aniline", "Nc1ccccc1"),
    ("thiophene", "c1ccsc1"),
)
MEDIUM: tuple[tuple[str, str], ...] = (
    ("aspirin", "CC(=O)Oc1ccccc1C(=O)O"),
    ("paracetamol", "CC(=O)Nc1ccc(O)cc1"),
    ("ibuprofen", "CC(C)Cc1ccc(cc1)C(C)C(=O)O"),
    ("caffeine", "Cn1cnc2c1c(=O)n(C)c(=O)n2C"),
    ("nicotine", "CN1CCCC1c1cccnc1"),
    ("vanillin", "COc1cc(C=O)ccc1O"),
    ("dopamine", "NCCc1ccc(O)c(O)c1"),
    ("serotonin", "NCCc1c[nH]c2ccc(O)cc12"),
    ("naphthalene", "c1ccc2ccccc2c1"),
    ("indole", "c1ccc2[nH]ccc2c1"),
    ("salicylic acid", "OC(=O)c1ccccc1O"),
    ("benzoic acid", "OC(=O)c1ccccc1"),
    ("histamine", "NCCc1c[nH]cn1"),
    ("adrenaline", "CNCC(O)c1ccc(O)c(O)c1"),
    ("menthol", "CC(C)C1CCC(C)CC1O"),
)
LARGE: tuple[tuple[str, str], ...] = (
    ("glucose", "OCC1OC(O)C(O)C(O)C1O"),
    ("penicillin G", "CC1(C)SC2C(NC(=O)Cc3ccccc3)C(=O)N2C1C(=O)O"),
    ("morphine", "CN1CCC23C4Oc5c(O)ccc(CC1C2C=CC4O)c35"),
    ("lidocaine", "CCN(CC)CC(=O)Nc1c(C)cccc1C"),
    ("diazepam", "CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc21"),
    ("quinine", "COc1ccc2nccc(C(O)C3CC4CCN3CC4C=C)c2c1"),
    ("testosterone", "CC12CCC3C(CCC4=CC(=O)CCC34C)C1CCC2O"),
    ("cholesterol", "CC(C)CCCC(C)C1CCC2C1(CCC3C2CC=C4C3(CCC(C4)O)C)C"),
    ("tryptophan", "NC(Cc1c[nH]c2ccccc12)C(=O)O"),
    ("atropine", "CN1C2CCC1CC(C2)OC(=O)C(CO)c1ccccc1"),
    ("metformin", "CN(C)C(=N)NC(=N)N"),
    ("naproxen", "COc1ccc2cc(C(C)C(=O)O)ccc2c1"),
)
LEVELS = (SMALL, MEDIUM, LARGE)
HIGHLIGHTS: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("yellow", (1.0, 0.9, 0.3)),
    ("pink", (1.0, 0.6, 0.7)),
    ("cyan", (0.5, 0.9, 1.0)),
    ("green", (0.6, 1.0, 0.6)),
)

TINTS: tuple[tuple[float, float, float, float], ...] = (
    (1.0, 0.98, 0.88, 1.0),
    (1.0, 0.93, 0.95, 1.0),
    (0.9, 0.97, 1.0, 1.0),
    (0.92, 1.0, 0.92, 1.0),
)


def sample(rng: random.Random, difficulty: int) -> Spec:
    name, smiles = rng.choice(LEVELS[difficulty])
    return {
        "name": name,
        "smiles": smiles,
        "size": rng.choice((300, 350, 400)),
        "highlight": rng.sample(range(4), 2) if difficulty >= 1 and rng.random() < 0.5 else [],
        "highlight_colour": rng.randrange(len(HIGHLIGHTS)),
        "legend": name if difficulty >= 2 or rng.random() < 0.3 else "",
        "bond_width": rng.choice((1.5, 2.0, 3.0)),
        "tinted": difficulty >= 2 and rng.random() < 0.5,
    }


def to_code(spec: Spec) -> str:
    """RDKit's Cairo drawer writing a PNG (the renderer captures written images; no matplotlib needed)."""
    size = spec["size"]
    rgb = HIGHLIGHTS[spec["highlight_colour"]][1]
    lines = [
        "from rdkit import Chem",
        "from rdkit.Chem.Draw import rdMolDraw2D",
        "",
        f"mol = Chem.MolFromSmiles({spec['smiles']!r})",
        f"drawer = rdMolDraw2D.MolDraw2DCairo({size}, {size})",
        "options = drawer.drawOptions()",
        f"options.bondLineWidth = {spec['bond_width']}",
    ]
    if spec["tinted"]:
        lines.append(f"options.setBackgroundColour({TINTS[spec['highlight_colour']]})")
    if spec["highlight"]:
        lines.append(f"atoms = {spec['highlight']}")
        lines.append(f"colours = {{i: {rgb} for i in atoms}}")
        lines.append(
            f"drawer.DrawMolecule(mol, highlightAtoms=atoms, highlightAtomColors=colours, legend={spec['legend']!r})"
        )
    else:
        lines.append(f"drawer.DrawMolecule(mol, legend={spec['legend']!r})")
    lines += ["drawer.FinishDrawing()", "drawer.WriteDrawingText('molecule.png')"]
    return "\n".join(lines) + "\n"


def _wrong_molecule(spec: Spec, rng: random.Random) -> str:
    """A different molecule of the same size class (a structure mistake)."""
    level = next(lv for lv in LEVELS if any(s == spec["smiles"] for _, s in lv))
    name, smiles = rng.choice([m for m in level if m[1] != spec["smiles"]])
    return to_code(edited(spec, lambda s: s.update(smiles=smiles)))


def _wrong_colour(spec: Spec, rng: random.Random) -> str:
    def edit(s: Spec) -> None:
        if not s["highlight"]:
            s["highlight"] = [0, 1]
        else:
            s["highlight_colour"] = (s["highlight_colour"] + rng.randint(1, len(HIGHLIGHTS) - 1)) % len(HIGHLIGHTS)

    return to_code(edited(spec, edit))


def _wrong_size(spec: Spec, rng: random.Random) -> str:
    return to_code(edited(spec, lambda s: s.update(size=s["size"] + rng.choice((-120, 150)))))


def _missing_element(spec: Spec, rng: random.Random) -> str:
    def edit(s: Spec) -> None:
        if s["legend"]:
            s["legend"] = ""
        elif s["tinted"]:
            s["tinted"] = False
        else:
            s["bond_width"] = 0.5 if s["bond_width"] > 1 else 4.0
            s["legend"] = ""

    return to_code(edited(spec, edit))


def _invalid_smiles(spec: Spec, rng: random.Random) -> str:
    """An unparsable SMILES: MolFromSmiles returns None and drawing raises."""
    return to_code(edited(spec, lambda s: s.update(smiles=s["smiles"] + "(")))


MUTATIONS = {
    "wrong_molecule": _wrong_molecule,
    "wrong_colour": _wrong_colour,
    "wrong_size": _wrong_size,
    "missing_element": _missing_element,
    "invalid_smiles": _invalid_smiles,
}

DOMAIN = Domain(
    name="chem",
    language="python",
    language_phrase="Python RDKit",
    render_options={},  # renderer defaults (the drawer sets its own size)
    sample=sample,
    to_code=to_code,
    mutations=MUTATIONS,
    generate_prompts=(
        "Write {phrase} code that draws the molecule shown in this image.",
        "Identify the molecule and generate the {phrase} drawing code that reproduces the image.",
        "Give the code using {phrase} to render this chemical structure.",
    ),
)
