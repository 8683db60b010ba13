"""Inputs mean what the user meant: one image is one image, every kind of collection works, and
the same picture gives the same features whichever way it arrives (issue 17, issue 22's
``image_shape``).

Each test compares features (or pixels) against the same images given another way, on real
networks (``lenet5``/``resnet18`` with random weights from a fixed seed) and real files.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.transforms import ToTensor

from featclf.data import as_image_source, image_files
from featclf.data.decode import decode_image
from featclf.extract import DeepFeatureExtractor
from featclf.models import get_model, save_checkpoint
from featclf.models.network import UntrainedWeightsWarning
from featclf.store import FeatureStore


def close(a: np.ndarray, b: np.ndarray, rel: float = 1e-4) -> None:
    """Max abs difference below ``rel`` of the features' scale."""
    assert a.shape == b.shape
    scale = float(np.abs(b).max())
    assert scale > 0
    diff = float(np.abs(a - b).max())
    assert diff <= rel * scale, f"max abs difference {diff:.3g} > {rel} x {scale:.3g}"


@pytest.fixture(scope="module")
def lenet():
    return DeepFeatureExtractor("lenet5", weights="random", device="cpu").fit()


@pytest.fixture(scope="module")
def resnet():
    return DeepFeatureExtractor("resnet18", weights="random", device="cpu").fit()


@pytest.fixture(scope="module")
def photos():
    """Three RGB images 40x36 (H x W), smooth enough that resizing matters."""
    coarse = np.random.default_rng(7).integers(0, 256, (3, 5, 4, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(c).resize((36, 40), Image.Resampling.BICUBIC))
                     for c in coarse])


# ---------------------------------------------------------------- one image is one image


def test_one_hwc_image_is_one_image(lenet, photos):
    one = photos[0]  # (40, 36, 3): once read as 40 grey 36x3 images
    features = lenet.transform(one)
    assert features.shape == (1, 84)
    np.testing.assert_array_equal(features, lenet.transform(photos[:1]))
    np.testing.assert_array_equal(lenet.transform(one[:, :, :1]), lenet.transform(
        photos[:1, :, :, :1]))  # (H, W, 1) too


def test_one_hw_grey_image_pil_image_and_path_are_one_image(lenet, tmp_path):
    grey = np.random.default_rng(1).integers(0, 256, (28, 20), dtype=np.uint8)
    expected = lenet.transform(grey[None])
    np.testing.assert_array_equal(lenet.transform(grey), expected)
    np.testing.assert_array_equal(lenet.transform(Image.fromarray(grey)), expected)
    Image.fromarray(grey).save(tmp_path / "one.png")
    np.testing.assert_array_equal(lenet.transform(str(tmp_path / "one.png")), expected)
    np.testing.assert_array_equal(lenet.transform(tmp_path / "one.png"), expected)


def test_ambiguous_square_2d_array_is_refused_with_both_ways_forward(lenet):
    square = np.zeros((64, 64), np.uint8)  # one 64x64 image, or 64 flattened 8x8 images?
    with pytest.raises(ValueError, match=r"X has shape \(64, 64\): one 64x64 grey image, or 64 "
                       r"flattened 8x8 grey images\? Pass X\[None\].*image_shape=\(8, 8\)"):
        lenet.transform(square)
    assert lenet.transform(square[None]).shape == (1, 84)
    assert DeepFeatureExtractor("lenet5", "random", image_shape=(8, 8)).fit() \
        .transform(square).shape == (64, 84)


def test_elongated_2d_array_is_refused_not_read_as_one_image():
    cifar_rows = np.arange(5 * 3072).reshape(5, 3072) % 256  # five flattened 32x32 RGB images
    with pytest.raises(ValueError, match=r"X has shape \(5, 3072\): 5 rows of flattened images, "
                       r"or one 5x3072 grey image\? Pass image_shape=.*X\[None\]"):
        as_image_source(cifar_rows.astype(np.uint8))
    rows = as_image_source(cifar_rows.astype(np.uint8), image_shape=(32, 32, 3))
    assert tuple(rows.images.shape) == (5, 3, 32, 32)
    assert rows.images[1, :, 0, 0].tolist() == (cifar_rows[1, :3] % 256).tolist()
    assert len(as_image_source(np.zeros((30, 90), np.uint8))) == 1  # a 30x90 image: plausible


def test_rows_and_batches_keep_their_meaning():
    rows = as_image_source(np.zeros((6, 784), np.uint8))  # scikit-learn's MNIST layout
    assert tuple(rows.images.shape) == (6, 1, 28, 28) and rows.row_width == 784
    grey = as_image_source(np.zeros((3, 28, 28), np.uint8))  # n grey images
    assert tuple(grey.images.shape) == (3, 1, 28, 28) and grey.row_width is None
    nchw = as_image_source(torch.zeros(2, 3, 8, 9, dtype=torch.uint8))
    assert tuple(nchw.images.shape) == (2, 3, 8, 9)


# ---------------------------------------------------------------- collections of images


def test_folder_path_string_is_its_image_files(lenet, photos, tmp_path):
    for i, img in enumerate(photos):
        Image.fromarray(img).save(tmp_path / f"p{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    files = image_files(tmp_path, labels="none")
    assert len(files) == 3
    np.testing.assert_array_equal(lenet.transform(str(tmp_path)), lenet.transform(files))
    np.testing.assert_array_equal(lenet.transform(str(tmp_path)), lenet.transform(photos))


def test_pil_images_of_mixed_sizes_and_modes_match_their_files(resnet, tmp_path):
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (30, 22, 4), dtype=np.uint8)
    images = [Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)),
              Image.fromarray(rng.integers(0, 256, (20, 31), dtype=np.uint8)),  # "L"
              Image.fromarray(rgba, "RGBA"),  # composited on white, like the file
              Image.fromarray(rng.integers(0, 256, (25, 25, 3), dtype=np.uint8)).convert("P")]
    paths = []
    for i, img in enumerate(images):
        img.save(tmp_path / f"m{i}.png")
        paths.append(str(tmp_path / f"m{i}.png"))
    features = resnet.transform(images)
    assert features.shape == (4, 512)
    np.testing.assert_allclose(features, resnet.transform(paths), rtol=0, atol=1e-5)
    assert len({tuple(row[:4]) for row in features}) == 4  # four different images


def test_torch_dataset_with_and_without_to_tensor_and_dataframe_of_paths(resnet, photos,
                                                                          tmp_path):
    for i, img in enumerate(photos):
        (tmp_path / f"class{i % 2}").mkdir(exist_ok=True)
        Image.fromarray(img).save(tmp_path / f"class{i % 2}" / f"x{i}.png")
    expected = resnet.transform(image_files(tmp_path, labels="none"))  # sorted like ImageFolder
    plain = ImageFolder(str(tmp_path))  # (PIL image, label) items
    np.testing.assert_allclose(resnet.transform(plain), expected, rtol=0, atol=1e-5)
    tensors = ImageFolder(str(tmp_path), transform=ToTensor())  # (float CHW in [0, 1], label)
    np.testing.assert_allclose(resnet.transform(tensors), expected, rtol=0, atol=1e-5)
    frame = pd.DataFrame({"path": [p for p, _ in plain.samples]})
    np.testing.assert_allclose(resnet.transform(frame), expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"DataFrame with columns \['path', 'label'\]: pass its "
                       r"column of image paths"):
        resnet.transform(frame.assign(label=["a", "b", "c"]))


# ---------------------------------------------------------------- what values mean


def test_uint8_its_to_tensor_twin_and_its_pil_image_give_the_same_features(resnet, photos):
    uint8 = resnet.transform(photos)  # (n, H, W, 3), resized 40x36 -> 256 -> crop 224
    floats = torch.stack([ToTensor()(Image.fromarray(p)) for p in photos])  # (n, 3, H, W)
    close(resnet.transform(floats), uint8)
    close(resnet.transform([Image.fromarray(p) for p in photos]), uint8)
    close(resnet.transform(photos.astype(np.float64) / 255), uint8)  # float64 HWC as well


def test_out_of_range_floats_are_refused_with_what_to_do(lenet, photos):
    with pytest.raises(ValueError, match=r"float values in \[\d+, 255\]: float images must be "
                       r"intensities in \[0, 1\].*divide 0-255 values by 255.*preprocess=None"):
        lenet.transform(photos.astype(np.float32))
    with pytest.raises(ValueError, match=r"float values in \[-0.5, 0.5\]"):
        lenet.transform(np.linspace(-0.5, 0.5, 2 * 28 * 28).reshape(2, 28, 28))


def test_unsigned_and_wide_integer_images(lenet, photos):
    grey = photos[:, :, :, 0]
    expected = lenet.transform(grey)
    sixteen = grey.astype(np.uint16) * 257  # the same picture as 16-bit data
    np.testing.assert_array_equal(lenet.transform(sixteen), expected)
    np.testing.assert_array_equal(as_image_source(sixteen).images[:, 0].numpy(), grey)
    for dtype in (np.uint32, np.uint64, np.int64):
        np.testing.assert_array_equal(lenet.transform(grey.astype(dtype)), expected)
    with pytest.raises(ValueError, match=r"integer values in \[0, 65535\].*pass them as uint16"):
        lenet.transform(sixteen.astype(np.uint32))
    with pytest.raises(ValueError, match=r"integer values in \[70000, 70000\]; integer images must "
                       r"lie in 0-255"):
        lenet.transform(np.full((2, 8, 8), 70000, np.uint64))


def test_16_bit_array_equals_its_16_bit_png(tmp_path):
    arr = np.array([[0, 257, 32768], [40000, 65000, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    from_file = decode_image(tmp_path / "deep.png")[:, :, 0]
    np.testing.assert_array_equal(as_image_source(arr).images[0, 0].numpy(), from_file)
    assert from_file.tolist() == [[0, 1, 128], [156, 253, 255]]


# ---------------------------------------------------------------- image_shape


def test_image_shape_reads_non_square_and_rgb_rows(lenet, photos):
    ext = DeepFeatureExtractor("lenet5", "random", image_shape=(40, -1, 3)).fit(
        photos.reshape(3, -1))
    assert ext.n_features_in_ == 40 * 36 * 3
    np.testing.assert_array_equal(ext.transform(photos.reshape(3, -1)), lenet.transform(photos))
    grey = photos[:, :, :, 0]
    rows = DeepFeatureExtractor("lenet5", "random", image_shape=(-1, 36)).fit()
    np.testing.assert_array_equal(rows.transform(grey.reshape(3, -1)), lenet.transform(grey))
    with pytest.raises(ValueError, match=r"rows of 1440 values cannot be images of "
                       r"image_shape=\(-1, 37\)"):
        DeepFeatureExtractor("lenet5", "random", image_shape=(-1, 37)).fit(grey.reshape(3, -1))
    with pytest.raises(ValueError, match=r"image_shape=\(-1, -1\): H and W must be positive, one "
                       r"of them may be -1"):
        DeepFeatureExtractor("lenet5", "random", image_shape=(-1, -1)).fit()
    with pytest.raises(ValueError, match=r"image_shape=\(4, 4, 2\): C must be 1 \(grey\) or 3"):
        DeepFeatureExtractor("lenet5", "random", image_shape=(4, 4, 2)).fit()


# ---------------------------------------------------------------- weights


def test_untrained_seed_network_warns_unless_random_was_asked_for(tmp_path):
    with pytest.warns(UntrainedWeightsWarning, match=r"lenet5 has no pretrained weights.*"
                      r"random weights \(seed 0\).*weights='random'"):
        DeepFeatureExtractor("lenet5").fit()
    path = tmp_path / "trained.pt"
    save_checkpoint(path, get_model("lenet5", "random").state_dict(), {"model": "lenet5"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedWeightsWarning)
        DeepFeatureExtractor("lenet5", weights="random").fit()
        DeepFeatureExtractor("lenet5", weights=path).fit()
        DeepFeatureExtractor(path).fit()


def test_store_shows_model_and_weights_in_words(tmp_path):
    store = FeatureStore(tmp_path / "store")
    ext = DeepFeatureExtractor("lenet5", "random", layer=["c5", "penultimate"], store=store).fit()
    ext.extract(np.zeros((2, 28, 28), np.uint8))
    for layer, config in ext.cache_configs_().items():
        assert store.about(config) == {"model": "lenet5", "weights": "random weights (seed 0)",
                                       "layer": layer}


def test_unreadable_dataset_item_is_named_and_skipped_on_request(lenet, photos, tmp_path):
    (tmp_path / "a").mkdir()
    for i, img in enumerate(photos):
        Image.fromarray(img).save(tmp_path / "a" / f"x{i}.png")
    (tmp_path / "a" / "x1.png").write_bytes(b"not a png")  # ImageFolder's loader fails on it
    folder = ImageFolder(str(tmp_path))
    with pytest.raises(ValueError, match=r"cannot read X\[1\]: .*on_error='skip'"):
        lenet.transform(folder)
    skipping = DeepFeatureExtractor("lenet5", "random", on_error="skip").fit()
    result = skipping.extract(folder)
    assert result.indices.tolist() == [0, 2] and [e.source for e in result.errors] == ["X[1]"]
    np.testing.assert_array_equal(result.features, lenet.transform(photos[[0, 2]]))
