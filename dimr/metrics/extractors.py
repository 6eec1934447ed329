"""Feature extractors by name, with their weight files checked by sha256 before anything is computed.

Offline rule: weights are configured paths, never downloads. A missing file is an error that
names the file and the command that fetches it on a machine with internet.
"""

from dataclasses import dataclass
from pathlib import Path

import torch.hub

from dimr.errors import ConfigError, MissingFileError
from dimr.io import sha256_file

# torch-fidelity's converted TF Inception (weights-inception-2015-12-05-6726825d.pth; the name carries
# the sha256 prefix, torch.hub convention; full hash as published by users of the v0.2.0 release).
TFID_INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
TFID_INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{TFID_INCEPTION_FILE}"
TFID_INCEPTION_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
# clean-fid's TorchScript Inception (StyleGAN2-ADA's metrics network).
CLEANFID_INCEPTION_FILE = "inception-2015-12-05.pt"
CLEANFID_INCEPTION_URL = ("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
                          f"{CLEANFID_INCEPTION_FILE}")
CLEANFID_INCEPTION_SHA256 = "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"


@dataclass(frozen=True)
class ExtractorSpec:
    """How one extractor is called through torch-fidelity."""

    fidelity_name: str        # name in torch-fidelity's FEATURE_EXTRACTORS_REGISTRY
    fid_layer: str            # features for FID and precision/recall
    isc_layer: str            # logits for IS
    channels: int | None      # 3: grey images are replicated; None: the net takes 1 or 3
    known_sha256: str | None  # the official weights (None: trained by the workflow)
    fetch: str                # how to obtain the weights file


EXTRACTORS = {
    "fmnist-net": ExtractorSpec("dimr-fmnist-net", "feat", "logits", None, None,
                                "train it here (no internet needed): `dimr fidnet {folder}`"),
    "inception-v3-compat": ExtractorSpec(
        "inception-v3-compat", "2048", "logits_unbiased", 3, TFID_INCEPTION_SHA256,
        f"on a machine with internet: `curl -L -o {TFID_INCEPTION_FILE} {TFID_INCEPTION_URL}`, then copy it "
        "to the configured path"),
}


def get_spec(name: str) -> ExtractorSpec:
    if name not in EXTRACTORS:
        raise ConfigError(f"unknown feature extractor {name!r}; valid: {sorted(EXTRACTORS)}")
    return EXTRACTORS[name]


def default_weights(name: str) -> Path | None:
    """torch-fidelity's download location for Inception ($TORCH_HOME/hub/checkpoints); none for ours."""
    if name != "inception-v3-compat":
        return None
    return Path(torch.hub.get_dir()) / "checkpoints" / TFID_INCEPTION_FILE


def check_file(path, what: str, fetch: str, sha256: str | None = None) -> str:
    """sha256 of `path`; MissingFileError naming the file and the fix when it is absent or differs."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} not found: {path}; {fetch}")
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256.lower():
        raise MissingFileError(f"{what} {path} has sha256 {digest}, expected {sha256}: the file is corrupted "
                               f"or a different version; replace it ({fetch}) or fix the expected hash")
    return digest


@dataclass(frozen=True)
class ResolvedWeights:
    """A checked weights file."""

    path: str
    sha256: str
    meaningful: bool  # False for stand-in weights (numbers are then only a smoke test)


def resolve_weights(name: str, path=None, sha256: str | None = None) -> ResolvedWeights:
    """Check the extractor's weights file; the expected hash is the configured one, else the known one."""
    # local: fidnet imports torch-fidelity (~1.5 s); run-config validation loads this module
    from dimr.metrics import fidnet

    spec = get_spec(name)
    path = path or default_weights(name)
    if path is None:
        raise ConfigError(f"extractor {name!r} needs `evaluate.extractor_weights` (a fidnet.pt); "
                          f"{spec.fetch.replace('{folder}', 'work/fidnet')}")
    expected = sha256 or spec.known_sha256
    if name == "fmnist-net" and expected is None:
        expected = fidnet.recorded_sha256(path)  # fidnet.json written next to the weights
        if expected is None and Path(path).is_file():
            raise ConfigError(f"no sha256 for {path}: set `evaluate.extractor_sha256`, or keep the "
                              f"{fidnet.INFO_FILE} that `dimr fidnet` wrote next to it")
    fetch = spec.fetch.replace("{folder}", str(Path(path).parent))  # the configured folder, not ours
    digest = check_file(path, f"{name} weights", fetch, expected)
    meaningful = spec.known_sha256 is None or digest == spec.known_sha256
    return ResolvedWeights(str(path), digest, meaningful)


def register(name: str) -> ExtractorSpec:
    """Make sure torch-fidelity knows the extractor (ours are registered lazily, once)."""
    spec = get_spec(name)
    if name == "fmnist-net":
        # local: fidnet imports torch-fidelity (~1.5 s); run-config validation loads this module
        from dimr.metrics import fidnet

        fidnet.register()
    return spec
