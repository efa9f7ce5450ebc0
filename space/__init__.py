"""Search spaces: pure functions turning an Optuna trial into trainer overrides."""
