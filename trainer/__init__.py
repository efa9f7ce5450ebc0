"""TrainConfig and presets, the training loop, divergence guards, schedules, checkpoints, telemetry."""
