"""Training: one loop driven by the saved run config; resume is running the same command again."""

from dimr.training.loop import training_loop

__all__ = ["training_loop"]
