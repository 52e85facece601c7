"""Ahead-of-time compilation for Cloud TPU topologies from a CPU host: does each SFT / ViRL program fit a chip?

`python -m vinci_jax.aot --config configs/virl.py:qwen3_vl_8b --topology v5p-64` builds the job's mesh over the
devices of a TPU topology description (libtpu, no TPU needed), lowers the trainers' own jitted functions with
abstract parameters and batches, and reports per-chip memory, FLOPs and a roofline bound (see `report`).
"""
