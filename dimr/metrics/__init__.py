"""Metrics: FID / IS / precision-recall through torch-fidelity, clean-fid cross-check.

- `stats`: float64 streamed feature statistics; FID as a pure function of two statistics files.
- `extractors`: feature networks by name, weights checked by sha256 (offline, never downloaded).
- `fidnet`: the Fashion-MNIST feature network (`dimr fidnet`), a torch-fidelity extractor.
- `fidelity`: one streamed pass through torch-fidelity's extractor; IS and PR by its functions.
- `clean_fid_check`: clean-fid's FID on the same images.
- `reference`: `dimr reference` (statistics of a data set); `evaluate`: `dimr evaluate RUN_DIR`.
Submodules are imported on use: reading a run config must not import torch-fidelity.
"""
