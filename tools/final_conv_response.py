"""Frequency response of U-ViT's final 3×3 conv in trained networks (the tiny single-branch slow mode).

    python tools/final_conv_response.py runs/networks/tiny-uvit-*/network-final.pt

U-ViT ends in Conv2d(C, C, 3) after the unpatchify (official libs/uvit.py, `final_layer`). With one
image channel that is a single 3×3 filter; at PyTorch's default init some seeds draw one whose 2-D
frequency response nearly vanishes somewhere, and the network before it has to learn to invert it.
docs/TINY_RECIPE.md (fourth search) lists min |H| 0.005-0.12 for every slow-mode run against 0.4-0.6 for
the runs that learned. Prints min and max |H| on the image grid for each one-channel final conv.
"""

import argparse

import numpy as np

from dimr.sampling.generate import network_from_state
from dimr.training.checkpoint import load_state


def response(kernel: np.ndarray, side: int) -> np.ndarray:
    """|DFT| of a 3×3 kernel zero-padded to side × side (circular convolution's transfer function)."""
    k = np.zeros((side, side))
    k[:3, :3] = kernel.reshape(3, 3)
    return np.abs(np.fft.fft2(k))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("networks", nargs="+", help="network-final.pt or snapshot files")
    p.add_argument("--weights", default="ema", choices=["ema", "model"])
    args = p.parse_args()
    for path in args.networks:
        net = network_from_state(load_state(path, what="network"), args.weights)
        conv = getattr(getattr(net, "head", None), "conv", None)
        if conv is None or tuple(conv.weight.shape[:2]) != (1, 1):
            print(f"{path}: no one-channel final conv")
            continue
        h = response(conv.weight.detach().numpy(), net.resolution)
        print(f"{path}: min |H| {h.min():.3f}  max |H| {h.max():.3f}")


if __name__ == "__main__":
    main()
