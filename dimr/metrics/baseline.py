"""`dimr baseline OUT_DIR --kind real-test|uniform-noise --like RUN_DIR`: the scale of a table.

Writes OUT_DIR/samples.npz holding real test images or uniform noise, as many as RUN_DIR samples,
and OUT_DIR/config.json with RUN_DIR's data, sample and evaluate sections, so that `dimr evaluate
OUT_DIR` scores them by exactly the protocol of the runs: the best and the worst a row can be.
"""

import json
from pathlib import Path

import numpy as np

from dimr.config import load_spec
from dimr.data.fashion_mnist import load_fashion_mnist
from dimr.errors import ConfigError
from dimr.io import atomic_savez, atomic_write_json
from dimr.run_config import load_run_config, resolve_run_config

KINDS = ("real-test", "uniform-noise")


def baseline_images(kind: str, cfg: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (N, H, W, C) images, labels) of a baseline with the run's data resolution."""
    data = cfg["data"]
    if kind == "real-test":
        if data["type"] != "fashion-mnist":
            raise ConfigError(f"baseline real-test needs a data set with a test split; {data['type']} has "
                              "none (ImageNet's real-data reference is ADM's reference batch itself)")
        from dimr.metrics.fidnet import pad_to_resolution  # local: fidnet imports torch-fidelity (~1.5 s)

        images, labels = load_fashion_mnist(data["root"], "test")
        if n > len(images):
            raise ConfigError(f"baseline real-test: {n} images asked, the test split has {len(images)}")
        images = pad_to_resolution(images[:n], data["resolution"], data.get("upsample", 1))
        return images, labels[:n].astype(np.int64)
    if kind == "uniform-noise":
        r = data["resolution"]  # the image side (latent models: of the decoded image)
        c = 1 if data["type"] == "fashion-mnist" else 3  # latent models are scored on decoded RGB pixels
        seeds = np.arange(n)
        images = np.stack([np.random.default_rng(int(s)).integers(0, 256, (r, r, c), dtype=np.uint8)
                           for s in seeds])
        return images, seeds % cfg["model"]["num_classes"]
    raise ConfigError(f"unknown baseline kind {kind!r}; valid: {list(KINDS)}")


def write_baseline(out_dir, kind: str, like_run) -> Path:
    """Write OUT_DIR/config.json and samples.npz for baseline `kind` with the protocol of `like_run`
    (a run folder, or a run config as JSON text: the workflow's)."""
    like = str(like_run)
    if like.lstrip().startswith("{"):  # a run spec: resolved here (absent data fails, naming the file)
        cfg = resolve_run_config(load_spec(like, "--like"))
        like_run = cfg["name"]
    else:
        cfg = load_run_config(like_run)
    n = cfg["evaluate"].get("num_samples") or cfg["sample"]["num_samples"]
    images, labels = baseline_images(kind, cfg, n)
    out_dir = Path(out_dir)
    meta = {"sample": cfg["sample"], "name": kind, "baseline": kind}
    atomic_savez(out_dir / "samples.npz", arr_0=images, labels=labels, seeds=np.arange(n),
                 meta=np.array(json.dumps(meta)))
    atomic_write_json(out_dir / "config.json", {**cfg, "name": kind, "baseline": kind,
                                                 "baseline_of": str(like_run)})
    return out_dir


def add_arguments(p):
    p.add_argument("out_dir", help="folder for config.json and samples.npz")
    p.add_argument("--kind", required=True, choices=KINDS, help="real test images or uniform noise")
    p.add_argument("--like", required=True,
                   help="a run folder (or a run spec as JSON) whose data, sample and evaluate sections "
                   "to copy")


def run(args) -> int:
    write_baseline(args.out_dir, args.kind, args.like)
    print(f"baseline {args.kind} -> {args.out_dir}")
    return 0
