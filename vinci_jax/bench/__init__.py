"""Benchmarks: `python -m vinci_jax.bench <name> [flags]` runs `vinci_jax.bench.<name>.main(argv)`.

Every benchmark prints a JSON object as its last line. Add one by creating `vinci_jax/bench/<name>.py` with a
`main(argv: list[str]) -> dict` function.
"""
