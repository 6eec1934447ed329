"""`dimr sample RUN_DIR`: the run's sample set as ADM-style samples.npz plus a grid PNG."""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dimr.config import parse_overrides
from dimr.data.latents import load_vae
from dimr.errors import ConfigError
from dimr.io import atomic_savez
from dimr.run_config import load_run_config, resolve_eval_config
from dimr.sampling.generate import generate_images, load_network
from dimr.sampling.grid import save_grid
from dimr.training import distributed

SAMPLES_FILE = "samples.npz"


def add_arguments(p):
    p.add_argument("run_dir", help="a finished run (with config.json and network-final.pt)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="sample.KEY=VALUE",
                   help="change the sample section for this output only (recorded in the npz), "
                        "e.g. --set sample.num_samples=100 --set sample.sampler.steps=10")
    p.add_argument("--out", default=None, help=f"output file (default RUN_DIR/{SAMPLES_FILE})")
    p.add_argument("--batch", type=int, default=256, help="images per forward pass (speed only)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: LOCAL_RANK's GPU or CPU)")
    p.add_argument("--png-dir", default=None, help="also write one PNG per image into this folder")


def sample_config(cfg: dict, overrides: list[str]) -> dict:
    """The run config with only its `sample` section changed (re-validated)."""
    over = parse_overrides(overrides)
    if set(over) - {"sample"}:
        raise ConfigError(f"dimr sample --set only changes sample.* keys, got {sorted(set(over))}; "
                          f"other sections change the trained network: make a new run instead")
    if not over:
        return cfg
    return {**cfg, "sample": resolve_eval_config(cfg, over)["sample"]}


def run(args) -> int:
    cfg = sample_config(load_run_config(args.run_dir), args.overrides)
    out = Path(args.out or Path(args.run_dir) / SAMPLES_FILE)
    device = distributed.local_device(args.device)
    rank, world = distributed.init_from_env(device)
    s = cfg["sample"]
    net = load_network(args.run_dir, ema=s["ema"], device=device)
    vae = None
    if cfg["data"]["type"] == "latents":
        vae = load_vae(cfg["data"]["vae"]).to(device)
    seeds = torch.arange(s["seed_start"], s["seed_start"] + s["num_samples"])
    mine = seeds[rank::world]  # any split gives the same images: each depends only on its seed
    images = []
    for i in range(0, len(mine), args.batch):
        images.append(generate_images(net, cfg, mine[i:i + args.batch], device=device, vae=vae))
        print(f"rank {rank}: {min(i + args.batch, len(mine))}/{len(mine)} images", file=sys.stderr,
              flush=True)
    images = np.concatenate(images) if images else np.zeros((0,), np.uint8)
    if world > 1:
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, images)
        images = np.empty((len(seeds),) + gathered[0].shape[1:], np.uint8)
        for r, part in enumerate(gathered):
            images[r::world] = part
    if rank == 0:
        labels = (seeds % net.num_classes).numpy()
        meta = json.dumps({"sample": s, "diffusion": cfg["diffusion"], "name": cfg["name"],
                           "config_sha256": cfg.get("provenance", {}).get("config_sha256")})
        # samples.npz is this command's output (`sample.npz` governs `dimr eval`)
        atomic_savez(out, arr_0=images, labels=labels, seeds=seeds.numpy(), meta=np.array(meta))
        if s["grid"]:
            save_grid(out.with_name("grid.png"), images[: s["grid"]], labels[: s["grid"]])
        if args.png_dir:
            write_pngs(args.png_dir, images, seeds.numpy())
        print(f"wrote {len(images)} samples to {out}", file=sys.stderr)
    distributed.shutdown()
    return 0


def write_pngs(folder, images: np.ndarray, seeds: np.ndarray):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for img, seed in zip(images, seeds):
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(folder / f"{seed:06d}.png")
