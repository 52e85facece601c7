"""Launch tooling: Cloud TPU VM lifecycle (`launch.tpu_vm`) and hyper-parameter sweeps (`launch.sweep`)."""
