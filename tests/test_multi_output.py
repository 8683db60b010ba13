"""Several outputs from one forward: any layers, the head's input and its output ("logits").

The references are the plainest computations: a single-layer extractor for each block (bit for
bit on the CPU), the network's own forward and a trained SoftmaxClassifier's own predictions.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import torch
import torchvision
from torch import nn

from featclf.data import load_mnist5k
from featclf.extract import DeepFeatureExtractor
from featclf.fingerprint import digest_json
from featclf.models import load_network
from featclf.store import FeatureStore

LENET_BLOCKS = ["c3", "c5", "penultimate", "logits"]


@pytest.fixture(scope="module")
def digits():
    """Twenty MNIST digits, NCHW uint8."""
    X, _ = load_mnist5k(return_X_y=True)
    return X[::200][:20, None].copy()


def _count_calls(modules: list[nn.Module]) -> list[int]:
    calls = [0]

    def hook(*_):
        calls[0] += 1

    for module in modules:
        module.register_forward_pre_hook(hook)
    return calls


@pytest.mark.parametrize("layer", [["logits"], ["c5", "logits"], LENET_BLOCKS,
                                   ["c3", "c5", "penultimate"]])
def test_one_forward_per_batch_for_any_number_of_blocks(digits, layer):
    ext = DeepFeatureExtractor("lenet5", "random", layer=layer, batch_size=6).fit()
    model = ext.feature_model_
    # Every layer of the feature model counts: a second copy of the network would show.
    convs = _count_calls([m for m in model.modules() if isinstance(m, nn.Conv2d)])
    linears = _count_calls([m for m in model.modules() if isinstance(m, nn.Linear)])
    out = ext.extract(digits)
    assert list(out.blocks) == layer
    # 20 images in batches of 6: four forwards through LeNet-5's three convolutions, F6 and
    # (for "logits") the head, whatever the number of blocks.
    assert convs[0] == 4 * 3
    assert linears[0] == 4 * (2 if "logits" in layer else 1)


def test_each_block_equals_its_single_layer_extractor_bit_for_bit(digits):
    multi = DeepFeatureExtractor("lenet5", "random", layer=LENET_BLOCKS, batch_size=8).fit()
    out = multi.extract(digits)
    assert multi.feature_blocks_ == {"c3": 16, "c5": 120, "penultimate": 84, "logits": 10}
    for block in LENET_BLOCKS:
        single = DeepFeatureExtractor("lenet5", "random", layer=block, batch_size=8).fit()
        np.testing.assert_array_equal(out.block(block), single.transform(digits))
    # and the logits are the whole network's output
    module = load_network("lenet5", "random", seed=0).module.eval()
    assert multi.model_fingerprint_ == load_network("lenet5", "random", seed=0).fingerprint
    with torch.inference_mode():
        expected = module(multi.preprocess_(torch.from_numpy(digits))).numpy()
    # (bit for bit only within one layout and batch: the extractor runs channels-last)
    np.testing.assert_allclose(out.block("logits"), expected, rtol=1e-5, atol=1e-6)


def test_logits_are_never_pooled_or_normalised(digits):
    out = DeepFeatureExtractor("lenet5", "random", layer=["penultimate", "logits"],
                               pooling="avg+l2").fit().extract(digits)
    np.testing.assert_allclose(np.linalg.norm(out.block("penultimate"), axis=1), 1, rtol=1e-6)
    plain = DeepFeatureExtractor("lenet5", "random", layer="logits").fit().transform(digits)
    np.testing.assert_array_equal(out.block("logits"), plain)
    assert np.abs(np.linalg.norm(plain, axis=1) - 1).max() > 0.05


def test_torchvision_network_layers_head_input_and_logits_from_one_forward():
    torch.manual_seed(0)
    module = torchvision.models.resnet18(num_classes=7).eval()
    x = torch.rand(5, 3, 32, 32)
    layer = ["layer3", "penultimate", "logits"]
    multi = DeepFeatureExtractor(module, layer=layer, preprocess=None, device="cpu").fit(x)
    features = multi.transform(x)
    assert multi.feature_blocks_ == {"layer3": 256, "penultimate": 512, "logits": 7}
    names = multi.get_feature_names_out()
    assert len(names) == features.shape[1] == 256 + 512 + 7
    assert names[0] == "deepfeat_layer3_f0" and names[256] == "deepfeat_penultimate_f0"
    assert names[-1] == "deepfeat_logits_f6"
    for block, columns in zip(layer, np.split(features, [256, 768], axis=1), strict=True):
        single = DeepFeatureExtractor(module, layer=block, preprocess=None, device="cpu").fit(x)
        np.testing.assert_array_equal(columns, single.transform(x))
    with torch.inference_mode():
        np.testing.assert_allclose(features[:, 768:], module(x).numpy(), rtol=1e-5, atol=1e-6)


def test_cached_logits_reproduce_the_networks_own_predictions(tmp_path):
    from featclf.train import SoftmaxClassifier

    X, y = load_mnist5k(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(X))
    X, y = X[order], y[order]
    clf = SoftmaxClassifier("lenet5", epochs=2, batch_size=50, validation_fraction=0.0,
                            random_state=0).fit(X[:400], y[:400])
    X_test = X[1000:1300]
    layer = ["penultimate", "logits"]
    first = DeepFeatureExtractor(clf, layer=layer, store=tmp_path / "s").fit().extract(X_test)
    again = DeepFeatureExtractor(clf, layer=layer, store=tmp_path / "s").fit().extract(X_test)
    assert (first.n_computed, again.n_computed, again.n_reused) == (300, 0, 300)
    logits = again.block("logits")
    np.testing.assert_array_equal(clf.classes_[logits.argmax(axis=1)], clf.predict(X_test))
    np.testing.assert_allclose(scipy.special.softmax(logits.astype(np.float64), axis=1),
                               clf.predict_proba(X_test), atol=1e-6)
    assert (clf.predict(X_test) == y[1000:1300]).mean() > 0.5  # a trained network, not noise


def test_each_block_has_its_own_cache_key(tmp_path, digits):
    store = FeatureStore(tmp_path / "store")
    multi = DeepFeatureExtractor("lenet5", "random", layer=LENET_BLOCKS, store=store).fit()
    first = multi.extract(digits)
    configs = multi.cache_configs_()
    assert [configs[b]["layer"] for b in LENET_BLOCKS] == LENET_BLOCKS
    assert len({digest_json(c) for c in configs.values()}) == 4
    # A single-block extractor finds its block among the multi-block job's vectors.
    for block in ("logits", "c5"):
        single = DeepFeatureExtractor("lenet5", "random", layer=block, store=store).fit()
        out = single.extract(digits)
        assert (out.n_computed, out.n_reused) == (0, len(digits))
        np.testing.assert_array_equal(out.features, first.block(block))


def test_logits_of_a_network_without_a_linear_head_is_a_clear_error():
    module = nn.Sequential(nn.Conv2d(1, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(ValueError, match="'logits' is the output of the network's final "
                                         "classification layer.*no nn.Linear"):
        DeepFeatureExtractor(module, layer=["logits"], preprocess=None).fit()
