"""vinci_jax: JAX/Flax VinciCoder (Qwen-VL picture-to-code) with SFT and ViRL."""

__version__ = "0.1.0"
