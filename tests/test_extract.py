"""DeepFeatureExtractor: features equal a hand-written headless forward, for every input kind.

The reference in each test is the plainest possible computation: the same network with its
final classification layer replaced by ``nn.Identity``, run in fp32 on a contiguous tensor that
the test preprocesses itself. The extractor (batching, channels-last, inference mode, file
decoding, preprocessing on the device) must give the same numbers.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from imagefile_helpers import write_image
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from torch import nn

from featclf.data import ImagePreprocess, image_files, load_mnist5k
from featclf.data.decode import ImageDecodeError
from featclf.data.transforms import IMAGENET_MEAN, IMAGENET_STD, MNIST_MEAN, MNIST_STD
from featclf.extract import (
    DeepFeatureExtractor,
    FeatureExtraction,
    ScaleToUnit,
    SkippedImagesWarning,
)
from featclf.fingerprint import digest_json
from featclf.models import get_model, load_network, save_checkpoint
from featclf.models.weights import WeightsError
from featclf.store import FeatureStore

TOL = 1e-4
RESNET_PRE = ImagePreprocess(32, 3, IMAGENET_MEAN, IMAGENET_STD)  # small images keep it fast
LENET_PRE = ImagePreprocess(28, 1, MNIST_MEAN, MNIST_STD)


# ---------------------------------------------------------------- networks and references


def _random_network(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return get_model(name, "random", num_classes=10).eval()


def _save(path: Path, module: nn.Module, name: str, pre: ImagePreprocess, head: str) -> Path:
    save_checkpoint(path, module.state_dict(),
                    {"model": name, "num_classes": 10, "classes": list(range(10)),
                     "preprocess": pre.to_dict(), "head": head})
    return path


def headless_forward(module: nn.Module, head: str, x: torch.Tensor) -> np.ndarray:
    """The reference: a copy of ``module`` with ``head`` replaced by nn.Identity, fp32."""
    net = copy.deepcopy(module).float().eval()
    parent_name, _, child = head.rpartition(".")
    setattr(net.get_submodule(parent_name) if parent_name else net, child, nn.Identity())
    with torch.no_grad():
        return net(x.float().contiguous()).numpy()


def assert_close(actual: np.ndarray, expected: np.ndarray, tol: float = TOL) -> None:
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    diff = float(np.abs(actual - expected).max())
    assert diff < tol, f"max abs difference {diff:.3g} >= {tol}"


class FittedNet:
    """The duck type the extractor accepts from a trainer: a fitted ``Network`` in ``network_``."""

    def __init__(self, module: nn.Module, preprocess=None, name=None, head=None) -> None:
        self.network_ = dataclasses.replace(load_network(module), arch=name,
                                            preprocess=preprocess, head=head)


class FittedNetEstimator(BaseEstimator):
    """An estimator holding a trained network, like a fitted SoftmaxClassifier."""

    def __init__(self, net=None) -> None:
        self.net = net

    def fit(self, X=None, y=None):
        self.network_ = dataclasses.replace(load_network(self.net), arch="lenet5",
                                            preprocess=LENET_PRE, head="output")
        return self


# ---------------------------------------------------------------- data


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    module = _random_network("resnet18", 1)
    path = _save(tmp_path_factory.mktemp("resnet") / "resnet18.pt", module, "resnet18",
                 RESNET_PRE, "fc")
    return module, path


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    module = _random_network("lenet5", 2)
    path = _save(tmp_path_factory.mktemp("lenet") / "lenet5.pt", module, "lenet5", LENET_PRE,
                 "output")
    return module, path


@pytest.fixture(scope="module")
def rgb_images():
    """Six RGB images, 40x36, NCHW uint8 (not the network's size: preprocessing resizes)."""
    return np.random.default_rng(3).integers(0, 256, (6, 3, 40, 36), dtype=np.uint8)


@pytest.fixture(scope="module")
def digits():
    """Six MNIST digits, NCHW uint8, 28x28."""
    X, _ = load_mnist5k(return_X_y=True)
    return X[::800][:6, None].copy()


def _write_pngs(folder: Path, nchw: np.ndarray) -> list[str]:
    paths = []
    for i, img in enumerate(nchw):
        hwc = img.transpose(1, 2, 0)
        paths.append(str(write_image(folder / f"img_{i:02d}.png",
                                     hwc[..., 0] if hwc.shape[2] == 1 else hwc)))
    return paths


INPUT_KINDS = ["uint8_nchw", "uint8_nhwc", "uint8_nhw_grey", "tensor_uint8", "float_unit_nchw",
               "paths", "series_of_paths", "image_files"]


def make_input(kind: str, nchw: np.ndarray, pre: ImagePreprocess, folder: Path):
    """``X`` of the given kind holding ``nchw``, and the model-ready tensor it stands for."""
    if kind == "uint8_nhw_grey":
        grey = nchw[:, :1]
        return grey[:, 0], pre(torch.from_numpy(grey))
    ready = pre(torch.from_numpy(nchw))
    if kind == "uint8_nchw":
        return nchw, ready
    if kind == "uint8_nhwc":
        return np.ascontiguousarray(nchw.transpose(0, 2, 3, 1)), ready
    if kind == "tensor_uint8":
        return torch.from_numpy(nchw), ready
    if kind == "float_unit_nchw":  # ToTensor()'s floats in [0, 1]: the uint8 twin's features
        return torch.from_numpy(nchw).float() / 255, ready
    paths = _write_pngs(folder, nchw)
    if kind == "paths":
        return paths, ready
    if kind == "series_of_paths":
        return pd.Series(paths, index=[f"s{i}" for i in range(len(paths))]), ready
    files = image_files(folder, labels="none")
    assert files.paths == sorted(paths)
    return files, ready


# ---------------------------------------------------------------- equivalence


@pytest.fixture(scope="module")
def resnet_extractor(resnet):
    _, path = resnet
    return DeepFeatureExtractor("resnet18", weights=path, device="cpu").fit()


@pytest.fixture(scope="module")
def lenet_extractor(lenet):
    _, path = lenet
    return DeepFeatureExtractor("lenet5", weights=path, batch_size=4).fit()


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_resnet18_features_equal_headless_forward(kind, resnet, resnet_extractor, rgb_images,
                                                  tmp_path):
    module, _ = resnet
    X, ready = make_input(kind, rgb_images, RESNET_PRE, tmp_path)
    features = resnet_extractor.transform(X)
    assert features.shape == (6, 512)
    assert_close(features, headless_forward(module, "fc", ready))


@pytest.mark.parametrize("kind", INPUT_KINDS)
def test_lenet5_features_equal_headless_forward(kind, lenet, lenet_extractor, digits, tmp_path):
    module, _ = lenet
    X, ready = make_input(kind, digits, LENET_PRE, tmp_path)
    features = lenet_extractor.transform(X)  # batch_size=4: the last batch is partial
    assert features.shape == (6, 84)
    assert_close(features, headless_forward(module, "output", ready))


def test_checkpoint_path_as_model_uses_its_metadata(resnet, rgb_images):
    module, path = resnet
    ext = DeepFeatureExtractor(path).fit()
    assert ext.model_name_ == "resnet18"
    # The checkpoint's preprocessing, not the 224 px ImageNet recipe of the registry:
    assert ext.preprocess_.to_dict() == RESNET_PRE.to_dict()
    expected = headless_forward(module, "fc", RESNET_PRE(torch.from_numpy(rgb_images)))
    assert_close(ext.transform(rgb_images), expected)


def test_module_as_model_auto_only_scales_uint8(lenet, digits):
    module, _ = lenet
    ext = DeepFeatureExtractor(module).fit()
    assert isinstance(ext.preprocess_, ScaleToUnit)
    assert ext.model_name_ is None
    expected = headless_forward(module, "output", torch.from_numpy(digits).float() / 255)
    assert_close(ext.transform(digits), expected)
    assert ext.get_feature_names_out()[0] == "deepfeat_f0"


def test_module_as_model_with_given_preprocess(resnet, rgb_images):
    module, _ = resnet
    ext = DeepFeatureExtractor(module, preprocess=RESNET_PRE).fit()
    expected = headless_forward(module, "fc", RESNET_PRE(torch.from_numpy(rgb_images)))
    assert_close(ext.transform(rgb_images), expected)


def test_module_with_weights_file_loads_them_into_a_copy(resnet, rgb_images):
    module, path = resnet
    other = _random_network("resnet18", 99)
    ext = DeepFeatureExtractor(other, weights=path, preprocess=RESNET_PRE).fit()
    expected = headless_forward(module, "fc", RESNET_PRE(torch.from_numpy(rgb_images)))
    assert_close(ext.transform(rgb_images), expected)
    assert not torch.equal(other.fc.weight, module.fc.weight)  # the given module is untouched


def test_fitted_network_holder_as_model(lenet, digits):
    module, _ = lenet
    holder = FittedNet(module, preprocess=LENET_PRE, name="lenet5", head="output")
    ext = DeepFeatureExtractor(holder).fit()
    expected = headless_forward(module, "output", LENET_PRE(torch.from_numpy(digits)))
    assert_close(ext.transform(digits), expected)
    # Same architecture and weights as the zoo model with that checkpoint: same cache identity.
    _, path = lenet
    assert ext.model_fingerprint_ == DeepFeatureExtractor("lenet5", weights=path).fit() \
        .model_fingerprint_


def test_holder_of_a_loaded_network_uses_its_preprocessing(lenet, digits):
    _, path = lenet
    holder = FittedNet(torch.nn.Identity())
    holder.network_ = load_network("lenet5", path)
    ext = DeepFeatureExtractor(holder).fit()
    assert ext.preprocess_.to_dict() == LENET_PRE.to_dict()  # the checkpoint's preprocessing
    assert ext.n_features_out_ == 84


def test_floats_are_intensities_and_model_ready_input_is_preprocess_none(lenet, digits):
    module, path = lenet
    scale = ImagePreprocess(28, 1, (0.0,), (2.0,))
    floats = torch.from_numpy(digits).float() / 255  # float NCHW in [0, 1]
    auto = DeepFeatureExtractor("lenet5", weights=path).fit()
    assert_close(auto.transform(floats), headless_forward(module, "output",
                                                          LENET_PRE(torch.from_numpy(digits))))
    explicit = DeepFeatureExtractor("lenet5", weights=path, preprocess=scale).fit()
    assert_close(explicit.transform(floats), headless_forward(module, "output", floats / 2))
    ready = LENET_PRE(torch.from_numpy(digits))  # normalised: values outside [0, 1]
    with pytest.raises(ValueError, match=r"float values in \[-0.4242, 2.821\].*preprocess=None"):
        auto.transform(ready)
    as_is = DeepFeatureExtractor("lenet5", weights=path, preprocess=None).fit()
    assert_close(as_is.transform(ready), headless_forward(module, "output", ready))


def test_preprocess_none_passes_inputs_unchanged_except_dtype(lenet, digits):
    module, path = lenet
    ext = DeepFeatureExtractor("lenet5", weights=path, preprocess=None).fit()
    expected = headless_forward(module, "output", torch.from_numpy(digits).float())  # 0-255
    assert_close(ext.transform(digits), expected, tol=1e-3)


def test_auto_batch_size_follows_the_input_size_and_set_params_applies(digits):
    # On the CPU: about 400k input pixels per batch, 8 to 64 (measured fastest here).
    assert DeepFeatureExtractor("resnet18", "random", device="cpu").fit().batch_size_ == 8
    ext = DeepFeatureExtractor("lenet5", "random", device="cpu").fit()
    assert ext.batch_size == "auto" and ext.batch_size_ == 64
    X = np.repeat(digits[:, 0], 12, axis=0)  # 72 images
    assert [len(i) for i, _, _ in ext.iter_features(X)] == [64, 8]
    ext.set_params(batch_size=30)  # a fitted extractor takes the new size at once
    assert [len(i) for i, _, _ in ext.iter_features(X)] == [30, 30, 12]


def test_jpeg_draft_decodes_large_photos_at_reduced_scale_and_keys_them_apart(resnet, tmp_path):
    from PIL import Image

    from featclf.data.decode import decode_image

    coarse = np.random.default_rng(4).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    photo = Image.fromarray(coarse).resize((1600, 1200), Image.Resampling.BICUBIC)
    jpeg, png = tmp_path / "photo.jpg", tmp_path / "photo.png"
    photo.save(jpeg, quality=90)
    photo.save(png)
    assert decode_image(jpeg).shape == (1200, 1600, 3)
    assert decode_image(jpeg, draft=256).shape == (300, 400, 3)  # 1/4 scale: both sides >= 256
    assert decode_image(png, draft=256).shape == (1200, 1600, 3)  # not a JPEG: full size

    _, weights = resnet  # RESNET_PRE: 32x32 without a resize step, so the draft side is 64
    full = DeepFeatureExtractor("resnet18", weights=weights, device="cpu").fit()
    draft = clone(full).set_params(jpeg_draft=True).fit()
    paths = [str(jpeg), str(png)]
    a, b = full.transform(paths), draft.transform(paths)
    assert not np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    cosine = float(a[0] @ b[0] / np.linalg.norm(a[0]) / np.linalg.norm(b[0]))
    assert cosine > 0.99  # 200x150 decoded, then resized to 32x32: nearly the same image
    assert draft.cache_config_(paths)["jpeg_draft"] == 64
    assert "jpeg_draft" not in full.cache_config_(paths)
    assert "jpeg_draft" not in draft.cache_config_(np.zeros((1, 32, 32, 3), np.uint8))
    store = tmp_path / "store"
    first = clone(draft).set_params(store=store).fit().extract(paths)
    other = clone(full).set_params(store=store).fit().extract(paths)
    assert (first.n_computed, other.n_computed, other.n_reused) == (2, 2, 0)
    assert_close(other.features, a, tol=1e-5)
    with pytest.raises(ValueError, match="The 'jpeg_draft' parameter of DeepFeatureExtractor "
                       "must be an instance of 'bool'"):
        DeepFeatureExtractor("lenet5", jpeg_draft="yes").fit()


def test_random_weights_are_the_same_in_every_fit(digits):
    a = DeepFeatureExtractor("lenet5", weights="random").fit()
    b = DeepFeatureExtractor("lenet5", weights="random").fit()
    assert a.model_fingerprint_ == b.model_fingerprint_
    np.testing.assert_array_equal(a.transform(digits), b.transform(digits))


def test_batch_size_does_not_change_features(lenet_extractor, digits):
    one_batch = clone(lenet_extractor).set_params(batch_size=64).fit().transform(digits)
    np.testing.assert_allclose(lenet_extractor.transform(digits), one_batch, atol=1e-6)
    np.testing.assert_allclose(lenet_extractor.transform(digits[[4, 1]]), one_batch[[4, 1]],
                               atol=1e-6)


def test_fitted_softmax_classifier_and_its_checkpoint_as_model(tmp_path, mnist_split):
    from featclf.train import SoftmaxClassifier

    X_train, y_train, X_test, _ = mnist_split
    clf = SoftmaxClassifier(model="lenet5", epochs=1, batch_size=50, validation_fraction=0.0,
                            random_state=0).fit(X_train[:200], y_train[:200])
    ext = DeepFeatureExtractor(clf).fit()
    expected = headless_forward(clf.module_, clf.head_,
                                clf.preprocess_(torch.from_numpy(X_test[:8, None])))
    assert_close(ext.transform(X_test[:8]), expected)
    from_file = DeepFeatureExtractor(clf.save(tmp_path / "clf.pt")).fit()
    assert from_file.model_fingerprint_ == ext.model_fingerprint_
    np.testing.assert_array_equal(from_file.transform(X_test[:8]), ext.transform(X_test[:8]))


class _MustNotRun(nn.Module):
    def forward(self, x):
        raise AssertionError("the network ran although every vector was in the store")


def test_store_answers_a_repeated_call_without_running_the_network(tmp_path, digits):
    first = DeepFeatureExtractor("lenet5", "random", store=tmp_path / "store").fit().extract(digits)
    assert (first.n_computed, first.n_reused) == (6, 0)
    np.testing.assert_array_equal(first.features,
                                  DeepFeatureExtractor("lenet5", "random").fit().transform(digits))
    ext = DeepFeatureExtractor("lenet5", "random", store=tmp_path / "store").fit()
    ext.runner_.module = _MustNotRun()
    again = ext.extract(digits)
    assert (again.n_computed, again.n_reused) == (0, 6)
    np.testing.assert_array_equal(again.features, first.features)


# ---------------------------------------------------------------- layers and pooling


@pytest.mark.parametrize("pooling", ["avg", "max", "flatten"])
def test_resnet18_named_layers_shapes_and_values(resnet, rgb_images, pooling):
    module, path = resnet
    ready = RESNET_PRE(torch.from_numpy(rgb_images))
    maps = {}
    hooks = [module.get_submodule(name).register_forward_hook(
        lambda _m, _i, out, name=name: maps.__setitem__(name, out)) for name in
        ("layer3", "layer4")]
    try:
        with torch.no_grad():
            module(ready)
    finally:
        for hook in hooks:
            hook.remove()
    # 32 px input: layer3 maps are 256 x 2 x 2, layer4 maps 512 x 1 x 1.
    for layer, (c, h, w) in {"layer3": (256, 2, 2), "layer4": (512, 1, 1)}.items():
        ext = DeepFeatureExtractor("resnet18", weights=path, layer=layer, pooling=pooling).fit()
        features = ext.transform(rgb_images)
        expected_map = maps[layer].numpy()
        expected = {"avg": expected_map.mean(axis=(2, 3)), "max": expected_map.max(axis=(2, 3)),
                    "flatten": expected_map.reshape(6, -1)}[pooling]
        assert features.shape == (6, c if pooling != "flatten" else c * h * w)
        assert ext.n_features_out_ == features.shape[1]
        assert len(ext.get_feature_names_out()) == features.shape[1]
        assert ext.get_feature_names_out()[0] == f"resnet18_{layer}_f0"
        assert_close(features, expected)


@pytest.mark.parametrize("pooling", ["avg", "max", "flatten"])
def test_lenet5_named_layers_shapes_and_values(lenet, digits, pooling):
    module, path = lenet
    maps = {}
    hooks = [module.get_submodule(name).register_forward_hook(
        lambda _m, _i, out, name=name: maps.__setitem__(name, out.numpy())) for name in
        ("c3", "c5")]
    try:
        with torch.no_grad():
            module(LENET_PRE(torch.from_numpy(digits)))
    finally:
        for hook in hooks:
            hook.remove()
    for layer, (c, h, w) in {"c3": (16, 10, 10), "c5": (120, 1, 1)}.items():
        ext = DeepFeatureExtractor("lenet5", weights=path, layer=layer, pooling=pooling).fit()
        features = ext.transform(digits)
        assert maps[layer].shape == (6, c, h, w)
        expected = {"avg": maps[layer].mean(axis=(2, 3)), "max": maps[layer].max(axis=(2, 3)),
                    "flatten": maps[layer].reshape(6, -1)}[pooling]
        assert_close(features, expected)
        assert ext.n_features_out_ == expected.shape[1]


def test_unknown_layer_error_lists_valid_names():
    with pytest.raises(ValueError, match=r"layer='c4' is not a node of LeNet5.*Valid names:.*c5"):
        DeepFeatureExtractor("lenet5", "random", layer="c4").fit()


def test_unknown_pooling_and_bad_arguments_are_named():
    def wording(name, must, got):
        return re.escape(f"The '{name}' parameter of DeepFeatureExtractor must be {must}. "
                         f"Got {got} instead.")

    with pytest.raises(ValueError, match=r"The 'pooling' parameter of DeepFeatureExtractor "
                       r"must be a str among \{.*\}. Got 'median' instead."):
        DeepFeatureExtractor("lenet5", pooling="median").fit()
    batch = "an int in the range [1, inf) or a str among {'auto'}"
    with pytest.raises(ValueError, match=wording("batch_size", batch, "0")):
        DeepFeatureExtractor("lenet5", batch_size=0).fit()
    with pytest.raises(ValueError, match=wording("batch_size", batch, "'big'")):
        DeepFeatureExtractor("lenet5", batch_size="big").fit()
    with pytest.raises(ValueError, match=r"The 'on_error' parameter of DeepFeatureExtractor "
                       r"must be a str among \{'.*'\}. Got 'ignore' instead."):
        DeepFeatureExtractor("lenet5", "random", on_error="ignore").fit()
    with pytest.raises(ValueError, match="The 'preprocess' parameter of DeepFeatureExtractor "
                       "must be .*Got 'imagenet' instead"):
        DeepFeatureExtractor("lenet5", preprocess="imagenet").fit()


def test_bad_models_say_what_to_pass(tmp_path, lenet):
    with pytest.raises(ValueError, match="unknown model 'lenet6'. Did you mean 'lenet5'"):
        DeepFeatureExtractor("lenet6").fit()
    bare = tmp_path / "bare.pt"
    torch.save(lenet[0].state_dict(), bare)
    with pytest.raises(WeightsError, match="no featclf metadata naming its architecture.*"
                       "model='<name>'"):
        DeepFeatureExtractor(bare).fit()
    with pytest.raises(ValueError, match="without a fitted network.*fit it"):
        DeepFeatureExtractor(FittedNetEstimator(net=lenet[0])).fit()
    with pytest.raises(WeightsError, match="checkpoint of model 'lenet5', not 'resnet18'"):
        DeepFeatureExtractor("resnet18", weights=lenet[1]).fit()


# ---------------------------------------------------------------- sklearn contract on images


def test_not_fitted_and_fit_returns_self_and_transform_keeps_state(digits):
    ext = DeepFeatureExtractor("lenet5", weights="random")
    with pytest.raises(NotFittedError):
        ext.transform(digits)
    assert ext.fit(digits) is ext
    before = dict(ext.__dict__)
    ext.transform(digits)
    assert ext.__dict__ == before
    assert ext.get_params()["model"] == "lenet5"


def test_n_features_in_only_for_flattened_images(digits):
    flat = digits.reshape(6, 784)
    ext = DeepFeatureExtractor("lenet5", weights="random").fit(flat)
    assert ext.n_features_in_ == 784
    assert_close(ext.transform(flat), ext.transform(digits), tol=1e-6)
    with pytest.raises(ValueError, match="X has 900 features, but DeepFeatureExtractor is "
                       "expecting 784 features as input"):
        ext.transform(np.zeros((2, 900), np.uint8))
    assert not hasattr(ext.fit(digits), "n_features_in_")


def test_clone_and_params(lenet, digits):
    ext = DeepFeatureExtractor("lenet5", weights=lenet[1], layer="c5", batch_size=8)
    copy_ = clone(ext)
    assert copy_.get_params() == ext.get_params()
    copy_.set_params(layer="c3", pooling="max")
    direct = DeepFeatureExtractor("lenet5", weights=lenet[1], layer="c3", pooling="max").fit()
    np.testing.assert_array_equal(copy_.fit().transform(digits), direct.transform(digits))
    assert copy_.n_features_out_ == 16 and ext.layer == "c5"
    with pytest.raises(NotFittedError):
        clone(ext.fit()).transform(digits)


def test_clone_shares_a_fitted_network_holder(lenet):
    holder = FittedNetEstimator(net=lenet[0]).fit()
    ext = DeepFeatureExtractor(holder)
    assert clone(ext).model is holder  # sklearn would otherwise return an unfitted copy
    module_ext = DeepFeatureExtractor(lenet[0])
    assert clone(module_ext).model is not lenet[0]  # modules are deep-copied as usual


@pytest.mark.parametrize("layer", [None, "layer3"])
def test_pickled_extractor_gives_identical_features(resnet, rgb_images, layer):
    _, path = resnet
    ext = DeepFeatureExtractor("resnet18", weights=path, layer=layer).fit()
    restored = pickle.loads(pickle.dumps(ext))
    np.testing.assert_array_equal(restored.transform(rgb_images), ext.transform(rgb_images))
    # A deep copy too (fx graph modules used for layer="..." lose eval mode when copied).
    np.testing.assert_array_equal(copy.deepcopy(ext).transform(rgb_images),
                                  ext.transform(rgb_images))


def test_set_output_pandas_names_columns_and_keeps_row_identity(lenet_extractor, digits):
    ext = clone(lenet_extractor).fit().set_output(transform="pandas")
    frame = ext.transform(digits)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == [f"lenet5_f{i}" for i in range(84)]
    assert frame.index.tolist() == list(range(6))
    assert_close(frame.to_numpy(), lenet_extractor.transform(digits), tol=1e-6)


def test_skipped_files_warn_and_dataframe_index_aligns(tmp_path, digits):
    paths = _write_pngs(tmp_path, digits)
    Path(paths[2]).write_bytes(b"not a png at all")
    series = pd.Series(paths, index=[f"img{i}" for i in range(6)])
    ext = DeepFeatureExtractor("lenet5", "random", on_error="skip").fit()
    ext.set_output(transform="pandas")
    with pytest.warns(SkippedImagesWarning, match=r"1 of 6 images could not be read"):
        frame = ext.transform(series)
    assert frame.index.tolist() == ["img0", "img1", "img3", "img4", "img5"]
    result = ext.extract(paths)
    assert isinstance(result, FeatureExtraction)
    assert result.indices.tolist() == [0, 1, 3, 4, 5]
    assert [e.index for e in result.errors] == [2] and result.errors[0].source == paths[2]
    assert result.n_computed == 5 and result.n_reused == 0
    expected = DeepFeatureExtractor("lenet5", "random").fit().transform(digits[[0, 1, 3, 4, 5]])
    assert_close(result.features, expected, tol=1e-6)
    with pytest.raises(ImageDecodeError, match=re.escape(paths[2])):
        DeepFeatureExtractor("lenet5", weights="random").fit().transform(paths)


def test_all_files_unreadable_gives_empty_rows(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    ext = DeepFeatureExtractor("lenet5", "random", on_error="skip").fit()
    with pytest.warns(SkippedImagesWarning, match="1 of 1"):
        assert ext.transform([str(bad)]).shape == (0, 84)


def test_cache_config_names_what_decides_the_vectors(lenet, digits):
    module, path = lenet
    ext = DeepFeatureExtractor("lenet5", weights=path).fit()
    cfg = ext.cache_config_()
    assert cfg["layer"] == "penultimate" and cfg["pooling"] == "avg"
    assert cfg["precision"] == "fp32" and cfg["preprocess"] == LENET_PRE.to_dict()
    assert ext.cache_config_(torch.zeros(2, 1, 28, 28))["preprocess"] == LENET_PRE.to_dict()
    none = DeepFeatureExtractor("lenet5", weights=path, preprocess=None).fit()
    assert none.cache_config_()["preprocess"] == {"cast": "float32"}  # model-ready input
    digest_json(cfg)  # JSON-able
    retrained = DeepFeatureExtractor("lenet5", weights="random").fit()  # other weights
    assert retrained.cache_config_()["model"] != cfg["model"]
    layered = DeepFeatureExtractor("lenet5", weights=path, layer="c5").fit()
    assert layered.cache_config_()["layer"] == "c5"


def test_progress_bar_reports_images_per_second(capsys, digits):
    DeepFeatureExtractor("lenet5", "random", progress=True).fit().transform(digits)
    err = capsys.readouterr().err
    assert "img/s" in err and "6/6" in err
    DeepFeatureExtractor("lenet5", weights="random").fit().transform(digits)
    assert capsys.readouterr().err == ""


def test_fit_with_unknown_input_size_probes_the_images():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                        nn.Linear(16, 3))
    images = np.random.default_rng(5).integers(0, 256, (3, 9, 9), dtype=np.uint8)
    with torch.no_grad():  # ReLU maps of the [0, 1]-scaled images: (3, 4, 7, 7)
        relu = net[1](net[0](torch.from_numpy(images[:, None]).float() / 255)).numpy()
    assert DeepFeatureExtractor(net).fit().n_features_out_ == 16  # the head's input
    ext = DeepFeatureExtractor(net, layer="1", pooling="flatten").fit(images)
    assert ext.n_features_out_ == 4 * 7 * 7
    assert_close(ext.transform(images), relu.reshape(3, 196))
    unsized = DeepFeatureExtractor(net, layer="1").fit()
    assert unsized.n_features_out_ is None
    assert_close(unsized.transform(images), relu.mean(axis=(2, 3)))
    with pytest.raises(ValueError, match="feature length is unknown"):
        unsized.get_feature_names_out()


# ---------------------------------------------------------------- pipelines


@pytest.fixture(scope="module")
def mnist_split():
    X, y = load_mnist5k(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(X))
    return X[order[:1500]], y[order[:1500]], X[order[1500:2000]], y[order[1500:2000]]


def test_pipeline_with_svm_fits_and_scores_on_mnist(mnist_split):
    X_train, y_train, X_test, y_test = mnist_split
    pipe = make_pipeline(DeepFeatureExtractor("lenet5", "random"), StandardScaler(),
                         LinearSVC(C=0.1))
    score = pipe.fit(X_train, y_train).score(X_test, y_test)
    assert score > 0.85  # random LeNet-5 features are already good digit features


@pytest.mark.slow
def test_compiled_extractor_matches_eager_with_one_graph_and_pickles(lenet, lenet_extractor,
                                                                     digits, tmp_path):
    """compile=True: TorchInductor on this CPU. Six images at batch_size=4 make a full and a
    short batch; the short one is padded, so one graph serves both."""
    from torch._dynamo.utils import counters

    _, path = lenet
    torch._dynamo.reset()
    counters.clear()
    ext = DeepFeatureExtractor("lenet5", weights=path, batch_size=4, compile=True).fit()
    features = ext.transform(digits)
    assert_close(features, lenet_extractor.transform(digits), tol=1e-4)
    paths = _write_pngs(tmp_path, digits)  # files take the uint8 geometry + finish route
    assert_close(ext.transform(paths), features, tol=1e-4)
    # One graph for the full and the padded short batch, arrays and files alike (frame
    # counts are not asserted: under load dynamo may revisit frames that capture no graph).
    assert counters["stats"]["unique_graphs"] == 1
    copy_ = pickle.loads(pickle.dumps(ext))  # the compiled graph is not pickled
    assert copy_.runner_._compiled is None and ext.runner_._compiled is not None
    assert_close(copy_.transform(digits[:3]), features[:3], tol=1e-4)
    with pytest.raises(ValueError, match="The 'compile' parameter of DeepFeatureExtractor must "
                       "be an instance of 'bool'"):
        DeepFeatureExtractor("lenet5", compile="yes").fit()


@pytest.mark.slow
def test_grid_search_over_svm_c_in_two_processes(mnist_split, lenet):
    X_train, y_train, X_test, y_test = mnist_split
    holder = FittedNetEstimator(net=lenet[0]).fit()  # shared by clones, pickled to workers
    pipe = make_pipeline(DeepFeatureExtractor(holder), StandardScaler(), LinearSVC())
    search = GridSearchCV(pipe, {"linearsvc__C": [0.01, 0.1]}, cv=2, n_jobs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # loky's worker warnings
        search.fit(X_train[:600], y_train[:600])
    assert search.best_params_["linearsvc__C"] in (0.01, 0.1)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.score(X_test, y_test) > 0.8


# ---------------------------------------------------------------- GPU


@pytest.fixture
def strict_fp32_cuda():
    """Compare fp32 on CUDA without TF32 convolutions/matmuls (10-bit mantissas)."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["uint8_nchw", "uint8_nhwc", "float_unit_nchw", "paths"])
def test_cuda_fp32_features_equal_cpu_reference(kind, resnet, rgb_images, tmp_path,
                                                strict_fp32_cuda):
    module, path = resnet
    X, ready = make_input(kind, rgb_images, RESNET_PRE, tmp_path)
    ext = DeepFeatureExtractor("resnet18", weights=path, device="cuda", precision="fp32",
                               batch_size=4).fit()
    assert ext.device_.type == "cuda" and ext.precision_ == "fp32"
    assert_close(ext.transform(X), headless_forward(module, "fc", ready))


@pytest.mark.gpu
def test_cuda_auto_precision_is_bf16_and_close(resnet, rgb_images):
    module, path = resnet
    ext = DeepFeatureExtractor("resnet18", weights=path).fit()
    assert ext.device_.type == "cuda" and ext.precision_ == "bf16"
    expected = headless_forward(module, "fc", RESNET_PRE(torch.from_numpy(rgb_images)))
    features = ext.transform(rgb_images)
    assert features.dtype == np.float32
    scale = float(np.abs(expected).max())
    assert float(np.abs(features - expected).max()) < 0.05 * scale
    restored = pickle.loads(pickle.dumps(ext))  # weights come back to the CPU for pickling
    np.testing.assert_allclose(restored.transform(rgb_images), features, atol=1e-6)


# ---------------------------------------------------------------- cache identity


def test_cache_key_of_the_default_lenet5_is_pinned():
    # Any change to fingerprints, configurations or their hashing silently orphans every
    # stored vector: it must be a deliberate change of this number (and said in the notes).
    ext = DeepFeatureExtractor("lenet5", weights="random").fit()
    assert ext.model_fingerprint_ == "b92663fd3918a7db93bff158b0131c71"
    assert FeatureStore.config_key(ext.cache_config_()) == "03323cd2e7588785f4f754820775a81e"


def test_a_module_changed_after_fit_never_files_new_vectors_under_old_weights(tmp_path, digits):
    module = get_model("lenet5")
    store = tmp_path / "store"
    before = DeepFeatureExtractor(module, preprocess=LENET_PRE, store=store).fit()
    with torch.no_grad():  # the user keeps training their network after building the extractor
        for p in module.parameters():
            p.add_(0.5)
    first = before.extract(digits)  # the weights as they were at fit, under their fingerprint
    assert first.n_computed == len(digits)
    after = DeepFeatureExtractor(module, preprocess=LENET_PRE, store=store).fit()
    assert after.model_fingerprint_ != before.model_fingerprint_
    again = after.extract(digits)
    assert (again.n_computed, again.n_reused) == (len(digits), 0)
    assert np.abs(again.features - first.features).max() > 1e-3
    np.testing.assert_array_equal(before.extract(digits).features, first.features)
