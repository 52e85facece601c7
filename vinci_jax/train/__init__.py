"""Training: SFT loop, shared optimizer, Orbax checkpointing and metrics (also used by ViRL)."""
