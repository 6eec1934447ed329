"""Class folders and ADM's centre crop, checked against a hand computation of the crop box."""

import numpy as np
import pytest
import torch
from PIL import Image

from dimr.data.image_folder import ImageFolder, center_crop_arr
from dimr.errors import MissingFileError


def _noise_image(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("w, h, halvings, resized, box", [
    # 300x130 -> 64: one BOX halving (130 >= 128) to 150x65; bicubic to round(150·64/65)=148 x 64;
    # x0=(148-64)//2
    (300, 130, [(150, 65)], (148, 64), (42, 0)),
    # 1030x600 -> 64: halvings 515x300, 257x150, 128x75 (75 < 128 stops); bicubic to 109x64; x0=(109-64)//2
    (1030, 600, [(515, 300), (257, 150), (128, 75)], (109, 64), (22, 0)),
    # portrait 90x200 -> 64: no halving (90 < 128); bicubic to 64 x round(200·64/90)=142; y0=(142-64)//2
    (90, 200, [], (64, 142), (0, 39)),
])
def test_adm_center_crop_matches_hand_computed_box(w, h, halvings, resized, box):
    im = _noise_image(w, h)
    out = center_crop_arr(im, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    ref = im
    for size in halvings:
        ref = ref.resize(size, resample=Image.BOX)
    ref = np.array(ref.resize(resized, resample=Image.BICUBIC))
    x0, y0 = box
    np.testing.assert_array_equal(out, ref[y0: y0 + 64, x0: x0 + 64])


def _make_folder(root, classes=("zebra", "apple", "mango"), per_class=2, size=(40, 30)):
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            _noise_image(*size, seed=10 * k + j).save(root / name / f"img{j}.png")
    (root / "apple" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    return root


def test_labels_follow_sorted_class_names_and_items_are_unit_range(tmp_path):
    ds = ImageFolder(_make_folder(tmp_path / "imgs"), resolution=16, hflip=False)
    assert ds.classes == ["apple", "mango", "zebra"] and ds.num_classes == 3
    assert len(ds) == 6 and ds.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert [f.parent.name for f in ds.files] == ["apple", "apple", "mango", "mango", "zebra", "zebra"]
    x, y = ds[4]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.long and int(y) == 2
    assert x.min() >= -1 and x.max() <= 1
    expected = torch.from_numpy(center_crop_arr(Image.open(ds.files[4]).convert("RGB"), 16)).permute(2, 0, 1)
    torch.testing.assert_close(x, expected.float() / 127.5 - 1)


def test_random_flip_mirrors_about_half_the_time(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    plain, flipping = ImageFolder(root, 16, hflip=False), ImageFolder(root, 16, hflip=True)
    torch.manual_seed(0)
    flips = [torch.equal(flipping[0][0], plain[0][0].flip(-1)) for _ in range(40)]
    assert 5 < sum(flips) < 35


def test_missing_or_empty_folders_raise(tmp_path):
    with pytest.raises(MissingFileError, match="image folder not found"):
        ImageFolder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="no class sub-folders"):
        ImageFolder(tmp_path / "empty")
    (tmp_path / "empty" / "cls").mkdir()
    with pytest.raises(MissingFileError, match="no images"):
        ImageFolder(tmp_path / "empty")
