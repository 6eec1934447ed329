"""`dimr latents IMAGE_FOLDER OUT_FILE --vae PATH`: precompute VAE moments of each image and its flip."""

import argparse

from dimr.data.latents import precompute_latents


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `dimr latents`."""
    parser.add_argument("image_folder", help="class-folder root (ImageNet layout: <root>/<class>/<image>)")
    parser.add_argument("out_file", help="output torch file (written atomically)")
    parser.add_argument("--vae", required=True, help="diffusers AutoencoderKL folder (e.g. sd-vae-ft-ema)")
    parser.add_argument("--resolution", type=int, default=256, help="image side after ADM's centre crop")
    parser.add_argument("--batch-size", type=int, default=32, help="images per encoder call (speed only)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers decoding images")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                        help="storage dtype of the moments")


def run(args: argparse.Namespace) -> int:
    """Encode the folder and write the latents file; returns the exit status."""
    out = precompute_latents(args.image_folder, args.out_file, args.vae, resolution=args.resolution,
                             batch_size=args.batch_size, num_workers=args.workers, device=args.device,
                             dtype=args.dtype)
    print(f"wrote {out}")
    return 0
