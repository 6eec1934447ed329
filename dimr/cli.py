"""`dimr` command line: argparse only; each subcommand lives in the module that owns the work."""

import argparse
import importlib
import sys

from dimr.errors import DimrError

# name -> (module with add_arguments/run, one-line help, runnable example)
COMMANDS = {
    "info": ("dimr.models.info", "parameter count and GMACs of a preset",
             "dimr info dimr-xl-2r --json\n  dimr info tiny-dimr --set mlp=gelu"),
    "plan": ("dimr.training.memory", "GPU memory of a training step: state, activations, the micro-batch "
             "and checkpointing that fit", "dimr plan dimr-xl-2r --batch 128 --gpus 16"),
    "train": ("dimr.training.command", "train (or resume) the run in RUN_DIR",
              "dimr train runs/demo --preset tiny-dimr --set train.total_kimg=4"),
    "sample": ("dimr.sampling.command", "generate the run's samples (one seed per image)",
               "dimr sample runs/demo --set sample.num_samples=100"),
    "evaluate": ("dimr.metrics.evaluate", "FID / IS / precision-recall of RUN_DIR/samples.npz",
                 "dimr evaluate runs/demo --set evaluate.reference=work/fmnist-train.npz "
                 "--set evaluate.extractor_weights=work/fidnet/fidnet.pt"),
    "eval": ("dimr.metrics.network_eval", "sample and score a trained network under any sampling/evaluation "
             "config, beside it in NETWORK_DIR/evals/<hash>",
             "dimr eval runs/demo --set sample.sampler.steps=8 --set sample.sampler.guidance.scale=0.5"),
    "curve": ("dimr.metrics.curve", "FID and conditional accuracy of every training snapshot",
              "dimr curve runs/demo"),
    "baseline": ("dimr.metrics.baseline", "real-data or noise samples scored by a run's protocol",
                 "dimr baseline runs/demo-noise --kind uniform-noise --like runs/demo"),
    "fidnet": ("dimr.metrics.fidnet", "train the Fashion-MNIST feature network used for metrics",
               "dimr fidnet work/fidnet --epochs 2"),
    "reference": ("dimr.metrics.reference", "reference feature statistics of a data set",
                  "dimr reference work/fmnist-train.npz --data fashion-mnist --split train "
                  "--extractor-weights work/fidnet/fidnet.pt"),
    "estimate": ("dimr.estimate", "GPU-hours of studies or presets from benchmark results",
                 "dimr estimate ablations/table1.yaml --scale paper"),
    "latents": ("dimr.data.latents_cli", "precompute Stable Diffusion VAE latents of an image folder",
                "dimr latents data/imagenet/train data/in256-latents.npz --vae weights/sd-vae-ft-ema "
                "--resolution 256"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dimr", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_, example) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv=None) -> int:
    # Parse only the subcommand name first so that `dimr info` does not import the training stack.
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="dimr", add_help=False)
    if argv and argv[0] in COMMANDS:
        module, help_, example = COMMANDS[argv[0]]
        sub = argparse.ArgumentParser(prog=f"dimr {argv[0]}", description=help_,
                                      epilog=f"example:\n  {example}",
                                      formatter_class=argparse.RawDescriptionHelpFormatter)
        mod = importlib.import_module(module)
        mod.add_arguments(sub)
        args = sub.parse_args(argv[1:])
    else:
        parser = build_parser()
        args = parser.parse_args(argv)
        mod = importlib.import_module(args._module)
    try:
        return int(mod.run(args) or 0)
    except DimrError as e:
        print(f"dimr {argv[0] if argv else ''}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
