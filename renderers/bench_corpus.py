"""A mixed, realistic render corpus for the benchmark: charts, molecules, SVG, HTML and TikZ."""

from __future__ import annotations

CHARTS = [
    "import matplotlib.pyplot as plt\nplt.bar(['a', 'b', 'c', 'd'], [3, 7, 2, 5], color='tab:blue')\n"
    "plt.title('Sales by region')\nplt.ylabel('units')\nplt.show()\n",
    "import matplotlib.pyplot as plt\nimport numpy as np\nx = np.linspace(0, 10, 200)\n"
    "plt.plot(x, np.sin(x), label='sin')\nplt.plot(x, np.cos(x), '--', label='cos')\nplt.legend()\nplt.grid(True)\n",
    "import matplotlib.pyplot as plt\nimport numpy as np\nrng = np.random.default_rng(0)\n"
    "plt.scatter(rng.normal(size=300), rng.normal(size=300), c=rng.random(300), cmap='viridis')\nplt.colorbar()\n",
    "import matplotlib.pyplot as plt\nplt.pie([35, 25, 20, 20], labels=['A', 'B', 'C', 'D'], autopct='%1.1f%%')\n"
    "plt.axis('equal')\nplt.savefig('pie.png')\n",
    "import matplotlib.pyplot as plt\nimport numpy as np\nrng = np.random.default_rng(1)\n"
    "plt.hist(rng.normal(size=2000), bins=40, color='tab:orange', edgecolor='black')\nplt.xlabel('value')\n",
    "import matplotlib.pyplot as plt\nimport numpy as np\nfig, axs = plt.subplots(2, 2, figsize=(8, 6))\n"
    "x = np.arange(10)\nfor i, ax in enumerate(axs.flat):\n    ax.plot(x, x ** (i + 1) / 10 ** i)\n"
    "    ax.set_title(f'panel {i}')\nfig.tight_layout()\n",
    "import matplotlib.pyplot as plt\nimport numpy as np\nx = np.arange(6)\ny = x ** 1.5\n"
    "plt.errorbar(x, y, yerr=0.3 * np.sqrt(y + 1), fmt='o-', capsize=4)\nplt.title('Measurements')\n",
    "import matplotlib.pyplot as plt\nimport numpy as np\nlabels = ['Q1', 'Q2', 'Q3', 'Q4']\n"
    "a, b = np.array([5, 6, 7, 8]), np.array([2, 3, 2, 4])\nplt.bar(labels, a, label='x')\n"
    "plt.bar(labels, b, bottom=a, label='y')\nplt.legend()\n",
    "import matplotlib.pyplot as plt\nimport numpy as np\ndata = np.arange(100).reshape(10, 10) % 7\n"
    "plt.imshow(data, cmap='magma')\nplt.colorbar()\nplt.title('Heatmap')\n",
    "import matplotlib.pyplot as plt\nimport numpy as np\nrng = np.random.default_rng(2)\n"
    "plt.boxplot([rng.normal(i, 1, 100) for i in range(4)])\nplt.xticks([1, 2, 3, 4], ['a', 'b', 'c', 'd'])\n",
    "import matplotlib.pyplot as plt\nimport numpy as np\nx = np.linspace(0, 5, 100)\n"
    "plt.fill_between(x, np.exp(-x), alpha=0.5)\nplt.plot(x, np.exp(-x))\nplt.title('Decay')\n",
    "import matplotlib.pyplot as plt\nimport numpy as np\nax = plt.subplot(projection='polar')\n"
    "t = np.linspace(0, 2 * np.pi, 100)\nax.plot(t, 1 + np.sin(3 * t))\n",
]
MOLECULES = [
    "from rdkit import Chem\nfrom rdkit.Chem import Draw\n"
    "Draw.MolToImage(Chem.MolFromSmiles('CC(=O)Oc1ccccc1C(=O)O'), size=(400, 300)).save('aspirin.png')\n",
    "from rdkit import Chem\nfrom rdkit.Chem.Draw import rdMolDraw2D\nd = rdMolDraw2D.MolDraw2DCairo(400, 300)\n"
    "d.DrawMolecule(Chem.MolFromSmiles('CN1C=NC2=C1C(=O)N(C(=O)N2C)C'))\nd.FinishDrawing()\n"
    "d.WriteDrawingText('caffeine.png')\n",
    "from rdkit import Chem\nfrom rdkit.Chem import Draw\n"
    "ms = [Chem.MolFromSmiles(s) for s in ('CCO', 'c1ccccc1', 'CC(C)O')]\n"
    "Draw.MolsToGridImage(ms, molsPerRow=3, subImgSize=(200, 200)).save('grid.png')\n",
]
SVGS = [
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100"><circle cx="50" cy="50" r="40" fill="#e33"/>'
    '<rect x="20" y="20" width="30" height="30" fill="#36c" opacity="0.7"/></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 200 200"><defs><linearGradient id="g">'
    '<stop offset="0" stop-color="gold"/><stop offset="1" stop-color="purple"/></linearGradient></defs>'
    '<path d="M100 10 L190 190 L10 190 Z" fill="url(#g)" stroke="black" stroke-width="3"/></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 120 60"><text x="10" y="40" font-size="30" '
    'font-family="sans-serif" fill="navy">Hello</text><line x1="0" y1="50" x2="120" y2="50" stroke="red"/></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 100 100"><g fill="none" stroke="green" stroke-width="2">'
    + "".join(f'<circle cx="50" cy="50" r="{r}"/>' for r in range(5, 50, 5))
    + "</g></svg>",
]
HTMLS = [
    "<html><head><style>body{font-family:sans-serif;margin:20px}.card{border:1px solid #ccc;border-radius:8px;"
    "padding:16px;margin:8px;display:inline-block;width:200px}</style></head><body><h1>Products</h1>"
    + "".join(
        f"<div class='card'><h3>Item {i}</h3><p>Price ${i * 7}.99</p><button>Buy</button></div>" for i in range(6)
    )
    + "</body></html>",
    "<html><body style='margin:0'><nav style='background:#222;color:#fff;padding:12px'>Home | About | Contact</nav>"
    "<main style='display:flex;gap:20px;padding:20px'><section style='flex:2'><h2>Welcome</h2><p>"
    + "Lorem ipsum dolor sit amet. " * 30
    + "</p></section><aside style='flex:1;background:#f3f3f3;padding:10px'>Sidebar</aside></main></body></html>",
    "<html><head><style>table{border-collapse:collapse}td,th{border:1px solid #999;padding:6px}</style></head>"
    "<body><table><tr><th>Name</th><th>Score</th></tr>"
    + "".join(f"<tr><td>Player {i}</td><td>{i * 13 % 100}</td></tr>" for i in range(15))
    + "</table></body></html>",
    "<html><body><form style='width:300px;margin:40px auto'><label>Email<input type='email' style='width:100%'>"
    "</label><label>Password<input type='password' style='width:100%'></label><input type='submit' value='Sign in'>"
    "</form><script>document.body.style.background='#eef'</script></body></html>",
]
TIKZ = [
    r"\begin{tikzpicture}\draw[thick,->] (0,0) -- (3,0) node[right] {$x$};"
    r"\draw[thick,->] (0,0) -- (0,3) node[above] {$y$};"
    r"\draw[blue,domain=0:2.5] plot (\x, {0.4*\x*\x});\end{tikzpicture}",
    r"\begin{tikzpicture}\foreach \i in {0,...,5} {\draw[fill=red!\i0] (\i,0) circle (0.4);}\end{tikzpicture}",
    r"\begin{tikzpicture}\node[draw,rounded corners] (a) {Input};\node[draw] (b) at (3,0) {Model};"
    r"\draw[->] (a) -- (b);\end{tikzpicture}",
    r"\begin{tikzpicture}\begin{axis}[xlabel=$x$,ylabel=$f(x)$]\addplot[domain=-2:2,samples=40] {x^3-x};"
    r"\end{axis}\end{tikzpicture}",
    r"$\displaystyle \sum_{k=1}^{n} k^2 = \frac{n(n+1)(2n+1)}{6}$",
    "\\documentclass{article}\n\\usepackage{tikz}\n\\begin{document}\n\\begin{tikzpicture}\n"
    "\\draw[step=0.5,gray,very thin] (0,0) grid (3,2);\\fill[green!50!black] (1.5,1) circle (0.6);\n"
    "\\end{tikzpicture}\n\\end{document}\n",
]


def corpus(scale: int = 1) -> dict[str, list[str]]:
    """Language -> code list; `scale` repeats each item with a harmless comment so none is deduplicated."""

    def vary(items: list[str], open_comment: str, close_comment: str = "") -> list[str]:
        return [f"{code}\n{open_comment} variant {k} {close_comment}\n" for k in range(scale * 2) for code in items]

    return {
        "python": vary(CHARTS + MOLECULES, "#"),
        "svg": vary(SVGS * 3, "<!--", "-->"),
        "html": vary(HTMLS, "<!--", "-->"),
        "latex": vary(TIKZ, "%"),
    }
