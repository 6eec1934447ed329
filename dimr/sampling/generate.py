"""Generate images from a finished run: image i depends only on its seed (and the run).

A stage-2 network (a cascade's super-resolution network or Relay Diffusion's stage 2) samples from its
stage-1 network's image of the same seed; its own draws come from a second seed derived from it.
"""

import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from dimr.data.latents import decode_latents
from dimr.diffusion import ConcatCondition, sample_from_noise, sample_stage2, upsample
from dimr.errors import ConfigError, MissingFileError
from dimr.models import build_model
from dimr.training.checkpoint import FINAL_NETWORK, load_state


def class_label(seeds: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class-balanced labels that depend only on the seed: 50K seeds from 0 give 50 per class."""
    return seeds % num_classes


def image_noise(seeds, shape, dtype=torch.float32) -> torch.Tensor:
    """x_T for each seed, drawn on the CPU so that it is the same on every device and batch."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)), dtype=dtype)
                        for s in seeds])


def load_network(run_dir, ema: bool = True, device="cpu") -> torch.nn.Module:
    """The finished network of a run (EMA weights by default), in eval mode."""
    path = Path(run_dir) / FINAL_NETWORK
    if not path.exists():
        raise MissingFileError(f"{path} not found: the run has not finished training; "
                               f"run `dimr train {run_dir}` first")
    return network_from_state(load_state(path, what="network"), "ema" if ema else "model", device)


def network_from_state(state: dict, weights: str = "ema", device="cpu") -> torch.nn.Module:
    """The network of a final-network or snapshot state (its `model_config` and `weights`), in eval mode."""
    net = build_model(state["model_config"])
    net.load_state_dict(state[weights])
    return net.to(device).eval().requires_grad_(False)


def stage_seed(seed: int, stage: int) -> int:
    """The 63-bit seed of stage `stage` (2: the second) of image `seed`; no two (seed, stage) collide."""
    digest = hashlib.sha256(f"{int(seed)}-stage{int(stage)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def is_stage2(cfg: dict) -> bool:
    """Whether a run's network samples from a stage-1 image (relay-blur process, or a cascade condition)."""
    d = cfg["diffusion"]
    relay = d.get("process", {}).get("type") == "relay-blur"
    return relay or d.get("condition", {}).get("type", "none") != "none"


@torch.no_grad()
def generate_images(net, cfg: dict, seeds: torch.Tensor, device="cpu", vae=None) -> np.ndarray:
    """Sample the given seeds with the run's sampler; returns (N, H, W, C) uint8."""
    if is_stage2(cfg):
        raise ConfigError("this is a stage-2 network (a relay-blur process or a low-resolution condition): "
                          "it samples from a stage-1 network's images; evaluate it with `dimr eval NET --set "
                          "sample.stage1.network=<stage-1 network folder>`")
    noise = image_noise(seeds, (net.in_channels, net.resolution, net.resolution)).to(device)
    labels = class_label(seeds, net.num_classes).to(device)
    with sampling_precision(cfg, device):
        x = sample_from_noise(net, cfg["diffusion"], cfg["sample"]["sampler"], noise, labels)
    if vae is not None:  # latent models: decode to pixels with the configured VAE
        x = decode_latents(vae, x)
    return to_uint8(x)


@torch.no_grad()
def generate_two_stage(net, cfg: dict, stage1, seeds: torch.Tensor, device="cpu") -> np.ndarray:
    """Stage 2 from stage 1, both of the given seeds; returns (N, H, W, C) uint8.

    `stage1` has `.net` and `.cfg` (dimr.sampling.two_stage.Stage1). Stage 1 makes image i from seed i
    exactly as its own evaluation would (then rounded to uint8 like every scored image); stage 2 draws
    from `stage_seed(seed, 2)`; both stages use the label of seed i.
    """
    labels = class_label(seeds, net.num_classes).to(device)
    x_low = from_uint8(generate_images(stage1.net, stage1.cfg, seeds, device)).to(device)  # (N, C, h, w)
    gens = [torch.Generator().manual_seed(stage_seed(s, 2)) for s in seeds]
    d, s = cfg["diffusion"], cfg["sample"]
    with sampling_precision(cfg, device):
        if d["process"]["type"] == "relay-blur":  # Relay Diffusion: from the nearest-upsampled image
            x = sample_stage2(net, d["process"], s["relay"], x_low, labels, gens)
        else:  # cascade (CDM §3): from pure noise, the upsampled image as extra input channels
            cond = upsample(x_low, net.resolution, d["condition"]["upsample"])
            noise = torch.stack([torch.randn((net.in_channels, net.resolution, net.resolution), generator=g)
                                 for g in gens]).to(device)
            x = sample_from_noise(ConcatCondition(net, cond), d, s["sampler"], noise, labels, gens)
    return to_uint8(x)


def sampling_precision(cfg: dict, device):
    """Autocast for `sample.precision` bf16 (the network's matmuls and convs in bfloat16; the solver's
    updates stay float32, since the float32 state promotes the bf16 prediction); fp32: a no-op."""
    bf16 = cfg["sample"].get("precision", "fp32") == "bf16"
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16)


def generate_all(net, cfg: dict, seeds: torch.Tensor, device="cpu", batch: int = 250,
                 stage1=None) -> np.ndarray:
    """`generate_images` over `seeds` in batches of `batch` (speed only: each image depends on its seed);
    with `stage1`, `generate_two_stage`."""
    def make(part):
        return generate_images(net, cfg, part, device) if stage1 is None else \
            generate_two_stage(net, cfg, stage1, part, device)

    return np.concatenate([make(seeds[i:i + batch]) for i in range(0, len(seeds), batch)])


class GeneratedImages:
    """A network's images made batch by batch as the evaluator asks for them (no samples file).

    The first `keep` images are held (the grid, the clean-fid subset) and served again without sampling;
    `sha256` is the hash of every image's bytes in seed order, as far as the first pass went. With a
    `store` (dimr.sampling.batch_store.BatchStore), each batch made is saved and a saved one is read back.
    """

    def __init__(self, net, cfg: dict, seeds: torch.Tensor, device="cpu", vae=None, keep: int = 0,
                 stage1=None, store=None):
        self.net, self.cfg, self.seeds, self.device, self.vae, self.keep = net, cfg, seeds, device, vae, keep
        self.stage1 = stage1  # a stage-2 network's stage 1 (dimr.sampling.two_stage.Stage1), or None
        self.store = store
        self.held = np.zeros((0,), np.uint8)  # the first `keep` images, once made
        self._hash, self._hashed = hashlib.sha256(), 0
        self.seconds = 0.0  # wall time spent sampling

    def __len__(self):
        return len(self.seeds)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def batches(self, batch_size: int, limit: int | None = None):
        n = len(self) if limit is None else min(limit, len(self))
        for i in range(0, n, batch_size):
            j = min(i + batch_size, n)
            if j <= len(self.held):
                yield self.held[i:j]
                continue
            images = None if self.store is None else self.store.get(self.seeds[i:j].numpy())
            if images is None:
                images = self._make(self.seeds[i:j])
                if self.store is not None:
                    self.store.put(self.seeds[i:j].numpy(), images)
            if i == len(self.held) and i < self.keep:
                part = images[: self.keep - i]
                self.held = np.concatenate([self.held, part]) if i else part.copy()
            if i == self._hashed:
                self._hash.update(np.ascontiguousarray(images).tobytes())
                self._hashed = j
            yield images

    def _make(self, seeds: torch.Tensor) -> np.ndarray:
        t0 = time.perf_counter()
        if self.stage1 is None:
            images = generate_images(self.net, self.cfg, seeds, self.device, self.vae)
        else:
            images = generate_two_stage(self.net, self.cfg, self.stage1, seeds, self.device)
        self.seconds += time.perf_counter() - t0
        return images

    def all(self, batch_size: int = 250) -> np.ndarray:
        """Every image, as one array (for samples.npz)."""
        return np.concatenate(list(self.batches(batch_size)))


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """NHWC uint8 -> [-1, 1] NCHW float32 (the data sets' scaling): how stage 2 sees a stage-1 image."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW float -> NHWC uint8, rounding like ADM's sampler."""
    x = ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
