"""ViRL: GRPO whose reward comes from rendering each sampled program (advantages, policy losses, the loop)."""
