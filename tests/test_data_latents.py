"""VAE latents with a tiny random AutoencoderKL: precompute (image + flip), sampling, scale, errors."""

import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from dimr.data import build_dataset, dataset_shape, latents_cli, validate_data_config
from dimr.data.image_folder import ImageFolder
from dimr.data.latents import SCALE, LatentDataset, decode_latents, load_vae, sample_latent
from dimr.errors import ConfigError, MissingFileError
from dimr.io import sha256_file

RES = 16  # image side; the tiny VAE (two blocks) downsamples by 2 -> 8x8 latents


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny VAE saved in diffusers format, a 2-class folder, and its latents file (via the CLI)."""
    from diffusers import AutoencoderKL

    root = tmp_path_factory.mktemp("latents")
    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                  sample_size=32, layers_per_block=1).save_pretrained(root / "vae")
    rng = np.random.default_rng(0)
    for name, n in (("cat", 3), ("ant", 2)):
        (root / "imgs" / name).mkdir(parents=True)
        for j in range(n):
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "imgs" / name / f"{j}.png")
    parser = argparse.ArgumentParser()
    latents_cli.add_arguments(parser)
    args = parser.parse_args([str(root / "imgs"), str(root / "out" / "lat.pt"), "--vae", str(root / "vae"),
                              "--resolution", str(RES), "--batch-size", "2", "--device", "cpu"])
    assert latents_cli.run(args) == 0
    return root


def test_precompute_stores_moments_of_each_image_and_its_flip(tiny):
    data = torch.load(tiny / "out" / "lat.pt", weights_only=True)
    m, meta = data["moments"], data["meta"]
    assert m.shape == (5, 2, 8, 8, 8) and m.dtype == torch.float16  # (N, image|flip, 2C, h, w)
    assert data["labels"].tolist() == [0, 0, 1, 1, 1]  # "ant" < "cat"
    assert meta["classes"] == ["ant", "cat"] and meta["scale"] == SCALE == 0.18215
    assert meta["resolution"] == RES and meta["latent_channels"] == 4 and meta["latent_resolution"] == 8
    assert meta["vae_sha256"] == sha256_file(tiny / "vae" / "diffusion_pytorch_model.safetensors")
    assert [p.name for p in (tiny / "out").iterdir()] == ["lat.pt"]  # no temporary file left behind
    vae, images = load_vae(tiny / "vae"), ImageFolder(tiny / "imgs", RES)
    x = torch.stack([images[i][0] for i in range(len(images))])
    with torch.no_grad():
        plain = vae.encode(x).latent_dist.parameters
        flipped = vae.encode(x.flip(-1)).latent_dist.parameters
    torch.testing.assert_close(m[:, 0].float(), plain, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(m[:, 1].float(), flipped, atol=2e-3, rtol=2e-3)
    assert not torch.allclose(m[:, 0], m[:, 1])  # the flip is a second, different entry


def test_latent_items_are_scaled_posterior_samples_of_a_random_flip(tiny):
    path = tiny / "out" / "lat.pt"
    moments = torch.load(path, weights_only=True)["moments"]
    ds = LatentDataset(path, hflip=True, generator=torch.Generator().manual_seed(3))
    assert len(ds) == 5 and (ds.in_channels, ds.resolution, ds.num_classes) == (4, 8, 2)
    g = torch.Generator().manual_seed(3)  # replay the draws by hand: flip choice, then ε
    flips = []
    for i in range(len(ds)):
        z, y = ds[i]
        flip = int(torch.randint(2, (), generator=g))
        mean, logvar = moments[i, flip].float().chunk(2)
        expected = SCALE * (mean + logvar.mul(0.5).exp() * torch.randn(mean.shape, generator=g))
        assert z.shape == (4, 8, 8) and z.dtype == torch.float32 and y.dtype == torch.long
        torch.testing.assert_close(z, expected)
        flips.append(flip)
    again = LatentDataset(path, hflip=True, generator=torch.Generator().manual_seed(3))
    other = LatentDataset(path, hflip=True, generator=torch.Generator().manual_seed(4))
    assert torch.equal(again[0][0], LatentDataset(path, generator=torch.Generator().manual_seed(3))[0][0])
    assert not torch.equal(again[1][0], other[1][0])
    no_flip = LatentDataset(path, hflip=False, generator=torch.Generator().manual_seed(0))
    eps = torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(0))
    mean, logvar = moments[2, 0].float().chunk(2)
    torch.testing.assert_close(no_flip[2][0], SCALE * (mean + logvar.mul(0.5).exp() * eps))


def test_sample_latent_zero_variance_is_scaled_mean_and_decode_is_clamped(tiny):
    moments = torch.cat([torch.full((2, 4, 3, 3), 2.0), torch.full((2, 4, 3, 3), -30.0)], dim=1)
    torch.testing.assert_close(sample_latent(moments), torch.full((2, 4, 3, 3), 2.0 * SCALE),
                               atol=1e-6, rtol=0)
    x = decode_latents(load_vae(tiny / "vae"), 50 * torch.randn(2, 4, 8, 8))
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1


def test_data_config_builds_and_validates_latents(tiny):
    cfg = {"type": "latents", "latents": str(tiny / "out" / "lat.pt"), "resolution": RES,
           "vae": str(tiny / "vae")}
    assert dataset_shape(cfg) == (4, 8, 2)
    assert validate_data_config(cfg).vae == str(tiny / "vae")
    assert isinstance(build_dataset(cfg, "train"), LatentDataset)
    with pytest.raises(ConfigError, match="set data.resolution to 16"):
        dataset_shape({**cfg, "resolution": 256})
    with pytest.raises(ConfigError, match="num_classes is 1000"):
        build_dataset({**cfg, "num_classes": 1000}, "train")
    with pytest.raises(MissingFileError, match="dimr latents"):
        validate_data_config({**cfg, "latents": str(tiny / "missing.pt")})


def test_missing_vae_names_the_path_and_how_to_fetch_it(tmp_path):
    with pytest.raises(MissingFileError, match="huggingface-cli download stabilityai/sd-vae-ft-ema") as e:
        load_vae(tmp_path / "sd-vae-ft-ema")
    assert "sd-vae-ft-ema" in str(e.value) and "data.vae" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="config.json"):
        load_vae(tmp_path / "empty")
