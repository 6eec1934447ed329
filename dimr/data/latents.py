"""Stable Diffusion VAE latents: precomputed moments of each image and its flip, sampled per step.

Follows U-ViT / DiMR's latent pipeline: the encoder's Gaussian moments (mean, logvar) are stored once
for every image and its horizontal flip; training draws `z = 0.18215·(mean + std·ε)` afresh each time.
"""

import os
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from dimr.config import sha256_json
from dimr.data.image_folder import ImageFolder
from dimr.errors import ConfigError, MissingFileError
from dimr.io import sha256_file

SCALE = 0.18215  # Stable Diffusion KL-f8 latent scale (LDM; used by U-ViT and DiMR)
FORMAT = "dimr-latents-v1"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
VAE_FIX = ("fetch it on a machine with internet, e.g. `huggingface-cli download stabilityai/sd-vae-ft-ema "
           "--local-dir /path/to/sd-vae-ft-ema`, copy the folder here and set `data.vae` (or `--vae`) to it")


# ---------------------------------------------------------------------------------------------------
# VAE
# ---------------------------------------------------------------------------------------------------

def vae_weight_files(path) -> list[Path]:
    """The weight file(s) of a diffusers VAE folder, or the single checkpoint file itself."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES) if path.is_dir() else []


def vae_sha256(path) -> str:
    """sha256 of the VAE weights (of the name -> hash table when the weights are sharded)."""
    files = vae_weight_files(path)
    if len(files) == 1:
        return sha256_file(files[0])
    return sha256_json({f.name: sha256_file(f) for f in files})


def check_vae_path(path) -> Path:
    """Raise MissingFileError unless `path` is a diffusers AutoencoderKL folder or a checkpoint file."""
    if path is None:
        raise ConfigError(
            f"no VAE configured: set `data.vae` to a diffusers AutoencoderKL folder; {VAE_FIX}.")
    path = Path(path).expanduser()
    if path.is_file() and path.suffix in WEIGHT_SUFFIXES:
        return path
    if not path.is_dir():
        raise MissingFileError(f"VAE not found: {path}; {VAE_FIX}.")
    if not (path / "config.json").is_file() or not vae_weight_files(path):
        raise MissingFileError(f"{path} is not a diffusers AutoencoderKL folder (needs config.json and "
                               f"diffusion_pytorch_model.safetensors); {VAE_FIX}.")
    return path


def load_vae(path, device=None):
    """AutoencoderKL from a local diffusers folder (or a single .safetensors/.ckpt file), eval mode."""
    from diffusers import AutoencoderKL  # local: diffusers is slow to import and only latent runs need it

    path = check_vae_path(path)
    if path.is_dir():
        vae = AutoencoderKL.from_pretrained(path, local_files_only=True)
    else:
        try:  # diffusers infers the config from the keys, but may need its hub copy of the config
            vae = AutoencoderKL.from_single_file(str(path), local_files_only=True)
        except Exception as e:  # diffusers raises many types here
            raise MissingFileError(f"cannot load the single-file VAE {path} offline ({e}); use the diffusers "
                                   f"folder instead: {VAE_FIX}.") from e
    return vae.eval().requires_grad_(False).to(device or "cpu")


@torch.no_grad()
def encode_moments(vae, x: torch.Tensor) -> torch.Tensor:
    """Moments (mean, logvar) of x (N, 3, H, W) in [-1, 1] and of its flip: (N, 2, 2C, h, w)."""
    xx = torch.cat([x, x.flip(-1)]).to(vae.device, vae.dtype)   # (2N, 3, H, W)
    m = vae.encode(xx).latent_dist.parameters.float()          # (2N, 2C, h, w), raw (unclamped) logvar
    return m.unflatten(0, (2, len(x))).transpose(0, 1)         # (N, 2, 2C, h, w)


def sample_latent(moments: torch.Tensor, generator=None) -> torch.Tensor:
    """Scaled posterior sample `0.18215·(mean + std·ε)` from moments (..., 2C, h, w)."""
    mean, logvar = moments.float().chunk(2, dim=-3)
    std = logvar.clamp(-30.0, 20.0).mul(0.5).exp()  # the clamp of diffusers' DiagonalGaussianDistribution
    eps = torch.randn(mean.shape, generator=generator, device=mean.device)
    return (mean + std * eps) * SCALE


@torch.no_grad()
def decode_latents(vae, z: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] (N, 3, H, W) float32 from scaled latents z (N, C, h, w)."""
    x = vae.decode(z.to(vae.device, vae.dtype) / SCALE).sample
    return x.float().clamp(-1.0, 1.0)


# ---------------------------------------------------------------------------------------------------
# Precompute and load
# ---------------------------------------------------------------------------------------------------

def _torch_save_atomic(path: Path, obj) -> None:
    """torch.save into a temporary sibling, fsync, rename: like dimr.io but without an in-memory copy
    (ImageNet-256 moments are ~42 GB in float16)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def precompute_latents(image_folder, out_file, vae_path, resolution: int = 256, batch_size: int = 32,
                       num_workers: int = 0, device=None, dtype: str = "float16") -> Path:
    """Encode every image of a class folder (ADM centre crop) and its flip; write one torch file."""
    if dtype not in ("float16", "float32"):
        raise ConfigError(f"latent dtype must be float16 or float32, got {dtype!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    vae = load_vae(vae_path, device)
    images = ImageFolder(image_folder, resolution, hflip=False)
    loader = DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    moments, start = None, 0
    for x, _ in tqdm(loader, desc=f"encoding {len(images)} images", unit="batch", disable=None):
        m = encode_moments(vae, x)  # (B, 2, 2C, h, w)
        if moments is None:  # allocate once the latent shape is known (the VAE decides the factor)
            moments = torch.empty((len(images), *m.shape[1:]), dtype=getattr(torch, dtype))
        moments[start: start + len(m)] = m.to(moments.dtype).cpu()
        start += len(m)
    meta = {
        "format": FORMAT, "scale": SCALE, "resolution": resolution, "dtype": dtype,
        "latent_channels": moments.shape[2] // 2, "latent_resolution": moments.shape[-1],
        "num_images": len(images), "classes": images.classes,
        "image_folder": str(Path(image_folder).resolve()),
        "vae": str(Path(vae_path).resolve()), "vae_sha256": vae_sha256(vae_path),
        "crop": "adm-center-crop", "flips": "moments[:, 0] image, moments[:, 1] horizontal flip",
    }
    out_file = Path(out_file)
    _torch_save_atomic(out_file, {"moments": moments, "labels": images.labels.clone(), "meta": meta})
    return out_file


def load_latents_file(path) -> dict:
    """{'moments', 'labels', 'meta'} of a `dimr latents` file, memory-mapped (nothing read eagerly)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"latents file not found: {path}; create it with `dimr latents IMAGE_FOLDER "
                               f"{path} --vae VAE_DIR --resolution 256` and set `data.latents` to it.")
    try:
        data = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:  # truncated zip, pickle errors...
        raise MissingFileError(
            f"cannot read latents file {path} ({e}); recompute it with `dimr latents`.") from e
    if not isinstance(data, dict) or data.get("meta", {}).get("format") != FORMAT:
        raise MissingFileError(f"{path} is not a {FORMAT} file; recompute it with `dimr latents`.")
    return data


class LatentDataset(Dataset):
    """Precomputed moments as (z float32 (C, h, w) = 0.18215·posterior sample, y long).

    `generator` makes the draws reproducible in one process; leave it None under DataLoader workers
    (each worker would copy the same generator state; the global RNG is seeded per worker).
    """

    def __init__(self, path, hflip: bool = True, generator: torch.Generator | None = None):
        data = load_latents_file(path)
        self.moments, self.labels, self.meta = data["moments"], data["labels"], data["meta"]
        self.hflip, self.generator = hflip, generator
        self.in_channels = self.meta["latent_channels"]
        self.resolution = self.meta["latent_resolution"]
        self.num_classes = len(self.meta["classes"])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        flip = int(torch.randint(2, (), generator=self.generator)) if self.hflip else 0
        return sample_latent(self.moments[i, flip], self.generator), self.labels[i]  # (C, h, w)
