"""clean-fid 0.1.35 as a cross-check of our FID: `cleanfid.fid.compute_fid` on two folders of PNGs.

- Inception (`mode` "clean": PIL bicubic resize to 299 outside the net; "legacy_tensorflow": the
  TF-style resize inside the net). clean-fid hard-codes the weights to `/tmp/inception-2015-12-05.pt`
  and downloads them when absent. We never let it: the configured file is checked by sha256 and
  loaded with clean-fid's own `InceptionV3W` from that file's folder (a private temporary folder
  holding a symlink when the file has another name), built exactly as
  `cleanfid.features.build_feature_extractor(mode, device, use_dataparallel=False)` builds it (0.1.35's
  DataParallel breaks off cuda:0), and passed as `custom_feat_extractor`. `/tmp` is neither read nor
  written, so concurrent jobs cannot see each other's weights.
- Fashion-MNIST net: `custom_feat_extractor` with `custom_fn_resize` = identity (the net takes the
  images at their own side, 32×32 padded or 16×16 down-sampled, whatever it was trained on); clean-fid
  feeds float [0, 255] RGB, turned back into the exact uint8 values.
`dataset_res` (the images' side) is passed explicitly although folder-to-folder FID does not read it.
"""

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dimr.errors import ConfigError
from dimr.metrics.extractors import (
    CLEANFID_INCEPTION_FILE,
    CLEANFID_INCEPTION_SHA256,
    CLEANFID_INCEPTION_URL,
    check_file,
)
from dimr.metrics.fidelity import Extractor, check_images

MODES = ("clean", "legacy_tensorflow")
FETCH = (f"on a machine with internet: `curl -L -o {CLEANFID_INCEPTION_FILE} {CLEANFID_INCEPTION_URL}`, "
         "then copy it to the configured path (evaluate.clean_fid_weights)")


def check_cleanfid_weights(path, sha256: str | None = None) -> str:
    """sha256 of clean-fid's TorchScript Inception; the known hash unless another is configured."""
    if path is None:
        raise ConfigError(f"the clean-fid check with Inception needs evaluate.clean_fid_weights; {FETCH}")
    return check_file(path, "clean-fid Inception weights", FETCH, sha256 or CLEANFID_INCEPTION_SHA256)


def cleanfid_inception(path, mode: str, device) -> torch.nn.Module:
    """clean-fid's `InceptionV3W` from the configured file, never from /tmp, never downloaded."""
    # local: clean-fid (an optional cross-check) loads torchvision and scipy (~1.5 s)
    from cleanfid.inception_torchscript import InceptionV3W

    if mode not in MODES:
        raise ConfigError(f"unknown clean-fid mode {mode!r}; valid: {list(MODES)}")
    path = Path(path).resolve()
    with tempfile.TemporaryDirectory(prefix="dimr-cleanfid-") as tmp:
        folder = path.parent
        if path.name != CLEANFID_INCEPTION_FILE:  # InceptionV3W looks for this exact name in a folder
            os.symlink(path, Path(tmp) / CLEANFID_INCEPTION_FILE)
            folder = Path(tmp)
        model = InceptionV3W(str(folder), download=False, resize_inside=mode == "legacy_tensorflow")
    return model.to(device).eval()


class CleanFidFashionNet(torch.nn.Module):
    """Our Fashion-MNIST net behind clean-fid's interface: float (N, 3, H, W) in [0, 255] -> features."""

    def __init__(self, extractor: Extractor):
        super().__init__()
        self.extractor = extractor

    def forward(self, x):
        x = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()  # exact PNG values
        return self.extractor(x)[self.extractor.spec.fid_layer]


def write_pngs(images: np.ndarray, folder) -> None:
    """One lossless PNG per image (grey stays grey; clean-fid converts to RGB on reading)."""
    check_images(images)
    for i, img in enumerate(images):
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(Path(folder) / f"{i:06d}.png")


def clean_fid(samples: np.ndarray, reference: np.ndarray, extractor: Extractor | None = None,
              mode: str = "clean", weights=None, sha256: str | None = None, batch_size: int = 64,
              device=None) -> float:
    """clean-fid's FID between two uint8 (N, H, W, C) image sets.

    With `extractor` (fmnist-net): our net through clean-fid. Without: clean-fid's Inception from `weights`.
    """
    # local: clean-fid (an optional cross-check) loads torchvision and scipy (~1.5 s)
    from cleanfid import fid as cfid

    if extractor is not None:
        if extractor.name != "fmnist-net":
            raise ConfigError("clean-fid uses its own Inception: pass extractor=None and its weights file")
        device = extractor.device
        model, resize = CleanFidFashionNet(extractor), (lambda x: np.asarray(x, np.float32))
    else:
        check_cleanfid_weights(weights, sha256)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model, resize = cleanfid_inception(weights, mode, device), None
    with tempfile.TemporaryDirectory(prefix="dimr-cleanfid-") as tmp:
        dirs = [Path(tmp) / "samples", Path(tmp) / "reference"]
        for d, images in zip(dirs, (samples, reference)):
            d.mkdir()
            write_pngs(images, d)
        with warnings.catch_warnings():  # clean-fid 0.1.35 passes scipy's deprecated `disp`
            warnings.filterwarnings("ignore", ".*`disp` argument is deprecated", DeprecationWarning)
            score = cfid.compute_fid(str(dirs[0]), str(dirs[1]), mode=mode, num_workers=0,
                                     batch_size=batch_size, device=device, dataset_res=samples.shape[1],
                                     custom_feat_extractor=model, custom_fn_resize=resize, verbose=False,
                                     use_dataparallel=False)
    return float(score)
