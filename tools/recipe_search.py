"""Recipe search for the tiny Fashion-MNIST scale, on seeds and samples the studies never use.

    python tools/recipe_search.py CANDIDATES.yaml --out docs/recipe_search.jsonl --seeds 100

CANDIDATES.yaml maps a candidate name to a run spec (preset, sections); `base:` is merged under
every candidate. Each candidate trains with run seed 100+ (the studies use 0-9) and is scored on
sample seeds from 1,000,000 (the studies use 0..N): FID against the train-split statistics, the
conditional accuracy of the feature net, precision/recall on equal-size sets, CPU seconds.
(FID over training is the workflow's `dimr curve`, from `train.snapshot_kimg` snapshots.)
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from dimr.config import deep_merge
from dimr.metrics.fidelity import Extractor, conditional_accuracy, extract, metrics_from_features
from dimr.metrics.stats import load_stats
from dimr.run_config import resolve_run_config, write_run_config
from dimr.sampling.generate import class_label, generate_all, load_network
from dimr.sampling.grid import save_grid
from dimr.training.loop import training_loop

SEARCH_SAMPLE_SEED = 1_000_000


def score(net, cfg, extractor, ref, num, batch=250):
    seeds = torch.arange(SEARCH_SAMPLE_SEED, SEARCH_SAMPLE_SEED + num)
    t0 = time.process_time()
    images = generate_all(net, cfg, seeds, batch=batch)
    sample_s = time.process_time() - t0
    feats = extract(extractor, images, 250, keep=num)
    out = metrics_from_features(feats, ref, ("fid", "is", "prc"), ref.features[:num], 3, 5000)
    out["accuracy"] = conditional_accuracy(feats.logits, class_label(seeds, net.num_classes).numpy())
    out["sample_cpu_s"] = sample_s
    return out, images


def main():
    p = argparse.ArgumentParser()
    p.add_argument("candidates")
    p.add_argument("--only", nargs="*", default=None)
    p.add_argument("--out", default="work/search/results.jsonl")
    p.add_argument("--root", default="work/search")
    p.add_argument("--seeds", type=int, nargs="+", default=[100])
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--fidnet", default="work/fidnet/fidnet.pt")
    p.add_argument("--reference", default="work/reference/fashion-mnist-train.npz")
    args = p.parse_args()
    torch.set_num_threads(1)
    cands = yaml.safe_load(Path(args.candidates).read_text())
    base = cands.pop("base", {})
    extractor = Extractor("fmnist-net", args.fidnet, None, "cpu")
    ref = load_stats(args.reference)
    for name, spec in cands.items():
        if args.only and name not in args.only:
            continue
        for seed in args.seeds:
            spec_full = deep_merge(base, spec)
            spec_full.update(name=name, seed=seed)
            spec_full.setdefault("sample", {}).setdefault("grid", 0)
            cfg = resolve_run_config(spec_full)
            run_dir = Path(args.root) / f"{name}-s{seed}"
            cfg = write_run_config(run_dir, cfg)
            t0 = time.process_time()
            w0 = time.perf_counter()
            training_loop(run_dir, cfg, progress=False)
            train_s, train_wall = time.process_time() - t0, time.perf_counter() - w0
            m, images = score(load_network(run_dir), cfg, extractor, ref, args.num)
            save_grid(run_dir / "grid.png", images[:100], (np.arange(100) % 10))
            row = {"name": name, "seed": seed, "kimg": cfg["train"]["total_kimg"], "train_cpu_s": train_s,
                   "train_wall_s": train_wall, "num": args.num, **{k: v for k, v in m.items()},
                   "spec": spec}
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                              if k != "spec"}), flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
