"""DiMR: a reproducible benchmark and ablation harness for multi-resolution diffusion models."""

__version__ = "0.1.0"
