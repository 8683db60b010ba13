"""Built-in data sets, image_files layouts, decoding and input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from imagefile_helpers import write_image

from featclf.data import (
    ImagePreprocess,
    as_image_source,
    decode_image,
    image_files,
    load_digits_images,
    load_mnist5k,
)


def test_mnist5k_has_5000_uint8_digits_500_per_class():
    X, y = load_mnist5k(return_X_y=True)
    assert X.shape == (5000, 28, 28) and X.dtype == np.uint8
    assert np.array_equal(np.bincount(y), np.full(10, 500))
    assert X.max() == 255 and X.min() == 0
    bunch = load_mnist5k()
    assert set(bunch) >= {"images", "target", "target_names", "DESCR"}


def test_digits_images_are_uint8_0_255():
    X, y = load_digits_images(return_X_y=True)
    assert X.shape == (1797, 8, 8) and X.dtype == np.uint8
    assert X.max() == 255 and len(y) == 1797


def test_image_files_from_class_folders(tmp_path, rng):
    for split in ("train",):
        for cls in ("cat", "dog"):
            for i in range(3):
                write_image(tmp_path / split / cls / f"{i}.jpg",
                            rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    files = image_files(tmp_path / "train")
    assert files.layout == "folders"
    assert list(files.labels) == ["cat"] * 3 + ["dog"] * 3
    assert all(p.endswith(".jpg") for p in files.paths)


def test_image_files_from_kaggle_and_seed_names(tmp_path, rng):
    kaggle = tmp_path / "kaggle"
    for name in ("cat.1.jpg", "cat.20.jpg", "dog.3.jpg"):
        write_image(kaggle / name, rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    assert list(image_files(kaggle).labels) == ["cat", "cat", "dog"]
    digits = tmp_path / "digits"
    for name in ("7.1234.png", "3.0001.png", "3.0002.png"):
        write_image(digits / name, rng.integers(0, 255, (28, 28), dtype=np.uint8))
    files = image_files(digits)
    assert files.labels.dtype == np.int64 and list(files.labels) == [3, 3, 7]


def test_image_files_from_csv(tmp_path, rng):
    for name in ("a.png", "b.png"):
        write_image(tmp_path / "img" / name, rng.integers(0, 255, (8, 8), dtype=np.uint8))
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\nimg/a.png,cat\nimg/b.png,dog\n")
    files = image_files(csv)
    assert files.layout == "csv" and list(files.labels) == ["cat", "dog"]
    assert files.paths[0] == str(tmp_path / "img" / "a.png")


def test_decode_converts_modes(tmp_path):
    from PIL import Image

    Image.new("CMYK", (5, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("P", (5, 4), 3).save(tmp_path / "p.png")
    Image.fromarray(np.full((4, 5), 65535, dtype=np.uint16)).save(tmp_path / "i16.png")
    assert decode_image(tmp_path / "cmyk.jpg").shape == (4, 5, 3)
    assert decode_image(tmp_path / "p.png").shape == (4, 5, 3)
    grey16 = decode_image(tmp_path / "i16.png")
    assert grey16.shape == (4, 5, 1) and int(grey16.max()) == 255


@pytest.mark.parametrize("shape,expected", [
    ((4, 28, 28), (4, 1, 28, 28)),
    ((4, 28, 28, 3), (4, 3, 28, 28)),
    ((4, 3, 28, 28), (4, 3, 28, 28)),
    ((4, 784), (4, 1, 28, 28)),
])
def test_array_layouts_become_nchw(shape, expected):
    src = as_image_source(np.zeros(shape, dtype=np.uint8))
    assert tuple(src.images.shape) == expected
    assert not src.model_ready


def test_float_nchw_is_model_ready_and_untouched_when_said_so():
    x = torch.randn(3, 1, 28, 28)
    with pytest.raises(ValueError, match="float values in"):
        as_image_source(x)  # not pixels in [0, 1]: the caller must say it is model-ready
    src = as_image_source(x, model_ready=True)
    assert src.model_ready
    (batch,) = list(src.iter_batches(batch_size=8, preprocess=None))
    assert torch.equal(batch.images, x)


def test_preprocess_grey_to_rgb_and_resize():
    pre = ImagePreprocess(size=32, channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    out = pre(torch.full((2, 1, 28, 28), 255, dtype=torch.uint8))
    assert out.shape == (2, 3, 32, 32)
    assert torch.allclose(out, torch.ones_like(out))


def test_imagenet_preprocess_equals_torchvision_weights_transforms(rng):
    """featclf's resize-256/crop-224 recipe gives what torchvision's own weights.transforms()
    gives on uint8 tensors, the reference the pretrained weights were evaluated with (built
    locally; no weights are downloaded). Both resize to uint8 pixels; torchvision's v1 code
    rounds a float resize, featclf runs the v2 uint8 kernel: the same pixels, give or take one
    grey level at some of them."""
    from torchvision.models import ResNet18_Weights

    reference = ResNet18_Weights.IMAGENET1K_V1.transforms()
    pre = ImagePreprocess(size=224, channels=3, resize=256)
    images = torch.from_numpy(rng.integers(0, 256, (2, 3, 300, 411), dtype=np.uint8))
    ours = pre(images)
    theirs = torch.stack([reference(img) for img in images])
    assert ours.shape == theirs.shape == (2, 3, 224, 224) and ours.dtype == torch.float32
    one_level = 1 / 255 / min(pre.std)
    diff = (ours - theirs).abs()
    assert diff.max() <= one_level * 1.001
    # Most pixels are identical, even on random noise (the worst case for rounding).
    assert (diff > 1e-5).float().mean() < 0.3


def test_bicubic_recipe_equals_torchvision_weights_transforms(rng):
    from torchvision.models import ViT_B_16_Weights

    from featclf.models.weights import torchvision_preprocess

    weights = ViT_B_16_Weights.IMAGENET1K_SWAG_LINEAR_V1  # resize 224 bicubic, crop 224
    pre = torchvision_preprocess("vit_b_16", weights.name)
    assert pre.interpolation == "bicubic"
    # Photo-like (smooth) images: on pure noise, torch's uint8 bicubic kernel (ported from
    # Pillow's, which clamps between its two passes, as the PIL-based ImageNet evaluation did)
    # and torchvision's float path differ at the overshoots; on photos by one grey level.
    coarse = rng.integers(0, 256, (2, 3, 14, 16), dtype=np.uint8)
    images = torch.nn.functional.interpolate(torch.from_numpy(coarse).float(), size=(260, 300),
                                             mode="bilinear").round().to(torch.uint8)
    ours = pre(images)
    theirs = torch.stack([weights.transforms()(img) for img in images])
    assert ours.shape == theirs.shape == (2, 3, 224, 224)
    assert (ours - theirs).abs().max() <= 1 / 255 / min(pre.std) * 1.001
    bilinear = ImagePreprocess(224, 3, pre.mean, pre.std, resize=224)(images)
    assert (bilinear - ours).abs().max() > 0.05  # the filter is really applied
    with pytest.raises(ValueError, match="interpolation='lanczos'"):
        ImagePreprocess(8, interpolation="lanczos")


def test_geometry_stays_uint8_and_finish_completes_it(rng):
    pre = ImagePreprocess(size=(20, 24), channels=1, mean=(0.25,), std=(0.5,))
    rgb = torch.from_numpy(rng.integers(0, 256, (3, 3, 50, 61), dtype=np.uint8))
    sized = pre.geometry(rgb)
    assert sized.dtype == torch.uint8 and sized.shape == (3, 1, 20, 24)
    assert torch.allclose(pre.finish(sized), pre(rgb), atol=1e-6)
    assert torch.allclose(pre.finish(sized), (sized.float() / 255 - 0.25) / 0.5, atol=1e-5)
    floats = torch.rand(2, 1, 20, 24)  # float input in [0, 1]: geometry leaves it float
    assert torch.allclose(pre(floats), (floats - 0.25) / 0.5, atol=1e-6)
    # Converting to grey and resizing in uint8 round twice: within two grey levels of floats.
    via_float = pre.normalize(pre.geometry(rgb.float() / 255))
    assert (pre(rgb) - via_float).abs().max() <= 2 / 255 / 0.5 + 1e-6


def test_file_batches_skip_bad_files(tmp_path, rng):
    good = [write_image(tmp_path / f"g{i}.png", rng.integers(0, 255, (10, 12), dtype=np.uint8))
            for i in range(3)]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    src = as_image_source([str(good[0]), str(bad), str(good[1]), str(good[2])])
    pre = ImagePreprocess(size=8, channels=1, mean=(0.0,), std=(1.0,))
    batches = list(src.iter_batches(batch_size=3, preprocess=pre, on_error="skip"))
    assert [list(b.indices) for b in batches] == [[0, 2], [3]]
    assert batches[0].errors[0].source == str(bad)
    with pytest.raises(ValueError, match="bad.png"):
        list(src.iter_batches(batch_size=3, preprocess=pre, on_error="raise"))


def test_listing_image_files_imports_neither_torch_nor_sklearn():
    import subprocess
    import sys

    code = ("import sys; from featclf.data import image_files; import featclf.cli._data; "
            "print(sorted(n for n in ('torch', 'sklearn') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
