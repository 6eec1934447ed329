"""`dimr train RUN_DIR`: create the run config on first use, then train or resume."""

import argparse
import json
import sys
from pathlib import Path

from dimr.config import TRAIN_SECTIONS, deep_merge, load_spec, parse_overrides
from dimr.data import validate_data_config
from dimr.errors import ConfigError, MissingFileError
from dimr.run_config import CONFIG_FILE, load_run_config, resolve_run_config, with_defaults, write_run_config
from dimr.training.loop import training_loop


def add_arguments(p):
    p.add_argument("run_dir", help="run directory; holds config.json, checkpoints and the final network")
    add_config_arguments(p)
    p.add_argument("--batch-gpu", type=batch_gpu_value, default="auto",
                   help="micro-batch per process (gradient accumulation), or auto (default): the memory "
                        "plan's on a GPU (`dimr plan`), the whole per-process batch on the CPU; speed only "
                        "under train.draws: sample")
    p.add_argument("--workers", type=int, default=0, help="data-loader worker processes")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: LOCAL_RANK's GPU or CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--checkpoint-blocks", default="auto", metavar="K[,K...]",
                   help="activation checkpointing: every K-th block (1: all, 0: none), or one K per branch "
                        "lowest resolution first, or auto (default: the memory plan's on a GPU, none on the "
                        "CPU); memory for time, the same weights")
    p.add_argument("--require", action="append", default=[], metavar="PATH",
                   help="a file later stages read (reference statistics, weights): checked before training")
    p.add_argument("--stop-at-kimg", type=float, default=None,
                   help="stop (with a checkpoint) after this many kimg; rerun without it to finish")


def batch_gpu_value(text: str):
    """argparse type of --batch-gpu: 'auto' or a positive integer."""
    if text == "auto":
        return text
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer or auto, got {text!r}")
    return int(text)


def add_config_arguments(p):
    """Options that create config.json when the run directory has none (shared by train/sample)."""
    p.add_argument("--preset", help="model preset for a new run (see `dimr info --list`)")
    p.add_argument("--recipe", help="training/sampling recipe for a new run (default tiny-fmnist)")
    p.add_argument("--spec", help="YAML/JSON run spec for a new run (preset, recipe, sections): a file, "
                   "or the text itself")
    p.add_argument("--spec-sections", help="the training sections with the fields at their dataclass "
                   "defaults left out (dimr.run_config.without_defaults), as the workflow passes them: "
                   "restored exactly, with no recipe or preset applied on top")
    p.add_argument("--seed", type=int, default=None, help="run seed for a new run (default 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override for a new run, e.g. --set train.total_kimg=4 --set model.mlp=gelu")


def ensure_run_config(args) -> dict:
    """Return the run's config, creating it from --preset/--spec/--set when it does not exist yet.

    On an existing run, --set/--spec are checked against it: the same values are fine, others are an error
    naming the keys. The data set is checked before config.json is written, so a wrong path can be fixed.
    """
    run_dir = Path(args.run_dir)
    path = run_dir / CONFIG_FILE
    sections = getattr(args, "spec_sections", None)
    if sections:  # the workflow's default-free training sections: restore them, resolve nothing new
        if args.spec or args.overrides:
            raise ConfigError("--spec-sections is the whole training spec: give it without --spec or --set")
        args.spec = json.dumps(with_defaults(load_spec(sections), TRAIN_SECTIONS))
    creating = any([args.preset, args.spec, args.overrides, args.recipe, args.seed is not None])
    if path.exists() and not creating:
        return load_run_config(run_dir)
    spec = {}
    if path.exists() and not args.spec and not args.preset:  # --set on an existing run: its own settings
        existing = load_run_config(run_dir)
        spec = {k: existing[k] for k in TRAIN_SECTIONS + ("name",) if k in existing}
    if args.spec:
        spec = load_spec(args.spec)
    spec = deep_merge(spec, parse_overrides(args.overrides))
    for key in ("preset", "recipe", "seed"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    if "preset" not in spec:
        raise ConfigError(f"{path} does not exist: give --preset (and optionally --recipe, "
                          f"--set) to create the run, e.g. `dimr train {run_dir} --preset tiny-dimr`")
    spec.setdefault("name", run_dir.name)
    cfg = resolve_run_config(spec)
    validate_data_config(cfg["data"])  # before anything is written
    # Identical settings re-used on an existing run are fine; different ones are an error naming keys.
    return write_run_config(run_dir, cfg)


def run(args) -> int:
    missing = [p for p in args.require if not Path(p).exists()]
    if missing:  # before config.json is written and before any compute
        raise MissingFileError(f"{', '.join(missing)} not found: the evaluations of this run read it; "
                               "set the path under `site:` in config/config.yaml (its comments say where "
                               "each file comes from)")
    cfg = ensure_run_config(args)
    validate_data_config(cfg["data"])
    path = training_loop(args.run_dir, cfg, device=args.device, batch_gpu=args.batch_gpu,
                         num_workers=args.workers, compile_model=args.compile,
                         checkpoint_blocks=args.checkpoint_blocks,
                         stop_at_kimg=args.stop_at_kimg)
    print(f"{'finished' if path.exists() else 'stopped'}: {path if path.exists() else args.run_dir}",
          file=sys.stderr)
    return 0
