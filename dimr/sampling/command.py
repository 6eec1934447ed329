"""`dimr sample RUN_DIR`: the run's sample set as ADM-style samples.npz plus a grid PNG.

Requeueable like `dimr eval`: each rank keeps its finished batches beside the output
(dimr.sampling.batch_store, tagged by the output's name, the sample section and the rank), exits
dimr.errors.EXIT_REQUEUE on SIGUSR2/SIGTERM, and the requeued command reads them back; image i depends
only on its seed, so samples.npz equals an uninterrupted run's. The stores go once the outputs are written.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dimr.config import parse_overrides, sha256_json
from dimr.data.latents import load_vae
from dimr.errors import EXIT_REQUEUE, ConfigError
from dimr.io import atomic_savez
from dimr.preemption import PREEMPTED, run_requeueable
from dimr.run_config import load_run_config, resolve_eval_config
from dimr.sampling.batch_store import BatchStore
from dimr.sampling.generate import GeneratedImages, load_network
from dimr.sampling.grid import save_grid
from dimr.training import distributed
from dimr.training.checkpoint import FINAL_NETWORK

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
    if run_requeueable(f"dimr sample: rank {rank}", "finished sample batches are saved",
                       lambda: write_samples(args, cfg, out, device, rank, world)) is PREEMPTED:
        return EXIT_REQUEUE
    distributed.shutdown()
    return 0


def batch_store(run_dir, cfg: dict, out: Path, rank: int, world: int) -> BatchStore:
    """This rank's finished batches, beside `out`. The tag names what the images depend on besides the
    network file and the seeds (the sample section: sampler, precision, EMA) and who writes them (the
    output, the rank of `world`), so another output or a changed `--set` never reads them."""
    tag = f"{out.stem}-{sha256_json(cfg['sample'])[:12]}-rank{rank}of{world}"
    return BatchStore(out.parent, Path(run_dir) / FINAL_NETWORK, tag=tag)


def write_samples(args, cfg: dict, out: Path, device, rank: int, world: int) -> None:
    s = cfg["sample"]
    net = load_network(args.run_dir, ema=s["ema"], device=device)
    vae = None
    if cfg["data"]["type"] == "latents":
        vae = load_vae(cfg["data"]["vae"]).to(device)
    seeds = torch.arange(s["seed_start"], s["seed_start"] + s["num_samples"])
    mine = seeds[rank::world]  # any split gives the same images: each depends only on its seed
    store = batch_store(args.run_dir, cfg, out, rank, world)
    if saved := store.saved():
        print(f"rank {rank}: resuming with {saved} images of finished batches", file=sys.stderr, flush=True)
    images = []
    for part in GeneratedImages(net, cfg, mine, device, vae, store=store).batches(args.batch):
        images.append(part)
        print(f"rank {rank}: {sum(map(len, images))}/{len(mine)} images", file=sys.stderr, flush=True)
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
    distributed.barrier()  # every rank's store stays until rank 0 has written the outputs
    store.discard()


def write_pngs(folder, images: np.ndarray, seeds: np.ndarray):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for img, seed in zip(images, seeds):
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(folder / f"{seed:06d}.png")
