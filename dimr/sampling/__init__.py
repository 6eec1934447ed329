"""Sampling: one seed per image, so the sample set never depends on batch size or process count."""

from dimr.sampling.generate import class_label, generate_images, image_noise, load_network

__all__ = ["class_label", "generate_images", "image_noise", "load_network"]
