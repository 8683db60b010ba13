"""The one inference loop (BatchRunner) and what runs on it: extraction and prediction."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch
from PIL import Image

from featclf import DeepFeatureExtractor, SoftmaxClassifier
from featclf.data import load_mnist5k
from featclf.data.decode import ImageDecodeError
from featclf.data.sources import Batch, FileSource
from featclf.inference import BatchRunner
from featclf.models import load_network


@pytest.fixture(scope="module")
def digits():
    X, y = load_mnist5k(return_X_y=True)
    picks = np.random.default_rng(0).permutation(len(X))[:300]  # the file is sorted by class
    return X[picks], y[picks]


def _count_forwards(module: torch.nn.Module) -> list[int]:
    calls = [0]

    def hook(*_):
        calls[0] += 1

    module.register_forward_hook(hook)
    return calls


def test_runner_keeps_order_and_gives_float32_host_arrays():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    runner = BatchRunner(net, device="cpu")
    images = torch.arange(7 * 4, dtype=torch.float32).reshape(7, 1, 2, 2)
    out = list(runner.run(Batch(np.arange(i, min(i + 3, 7)), images[i:i + 3])
                          for i in range(0, 7, 3)))
    assert [idx.tolist() for idx, _, _ in out] == [[0, 1, 2], [3, 4, 5], [6]]
    got = np.concatenate([o for _, o, _ in out])
    with torch.no_grad():  # batch by batch as the runner does (BLAS rounds by batch shape)
        expected = np.concatenate([net(images[i:i + 3]).numpy() for i in range(0, 7, 3)])
    assert got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_runner_hands_out_every_computed_batch_before_a_failing_batch_raises(tmp_path, device):
    paths = []
    for i in range(10):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((2, 2), i, np.uint8)).save(path)
        paths.append(path)
    paths[9].write_bytes(b"junk")  # the third batch of four fails under on_error="raise"
    # On CUDA a batch's copy to the host overlaps the next forward: the held batch must still
    # come out when the next one fails.
    runner = BatchRunner(torch.nn.Flatten(), device=device)
    received = []
    with pytest.raises(ImageDecodeError, match=re.escape(str(paths[9]))):
        for indices, out, _ in runner.run(FileSource(paths).iter_batches(
                batch_size=4, preprocess=None, on_error="raise")):
            received.append((indices.tolist(), out[:, 0].tolist()))
    assert received == [([0, 1, 2, 3], [0, 1, 2, 3]), ([4, 5, 6, 7], [4, 5, 6, 7])]


def test_several_layers_come_from_one_forward_and_equal_single_layer_extractors(digits):
    X, _ = digits
    layers = ["c3", "c5", "penultimate"]
    multi = DeepFeatureExtractor("lenet5", "random", layer=layers, batch_size=64).fit()
    # The graph module's own forward, counted per call: one per batch for all three nodes.
    calls = _count_forwards(multi.feature_model_.body)
    result = multi.extract(X)
    assert calls[0] == int(np.ceil(len(X) / 64))
    assert list(result.blocks) == layers
    for layer in layers:
        single = DeepFeatureExtractor("lenet5", "random",
                                      layer=None if layer == "penultimate" else layer,
                                      batch_size=64).fit()
        np.testing.assert_array_equal(result.block(layer), single.transform(X))
    assert multi.transform(X).shape[1] == sum(multi.feature_blocks_.values()) == 16 + 120 + 84
    names = multi.get_feature_names_out()
    assert names[0] == "lenet5_c3_f0" and names[-1] == "lenet5_penultimate_f83"


def test_several_layers_are_stored_under_their_own_keys_and_reused(digits, tmp_path):
    X, _ = digits
    store = tmp_path / "store"
    first = DeepFeatureExtractor("lenet5", "random", layer=["c5", "penultimate"], store=store).fit()
    out = first.extract(X)
    assert (out.n_computed, out.n_reused) == (len(X), 0)
    # A one-layer extractor finds its layer's vectors among them: same key, no forward.
    single = DeepFeatureExtractor("lenet5", "random", layer="c5", store=store).fit()
    again = single.extract(X)
    assert (again.n_computed, again.n_reused) == (0, len(X))
    np.testing.assert_array_equal(again.features, out.block("c5"))
    configs = first.cache_configs_()
    assert configs["c5"]["layer"] == "c5" and configs["penultimate"]["layer"] == "penultimate"
    assert configs["c5"]["model"] == configs["penultimate"]["model"]


def test_prediction_runs_on_the_runner_without_copying_per_call(digits):
    X, y = digits
    clf = SoftmaxClassifier("lenet5", epochs=1, random_state=0).fit(X, y)
    first = clf.predict_proba(X[:50])
    runner = clf._runner()
    assert runner.module is clf.module_  # on the CPU the fitted network itself runs
    np.testing.assert_array_equal(clf.predict_proba(X[:50]), first)
    assert clf._runner() is runner  # made once, not per call
    restored = pickle.loads(pickle.dumps(clf))
    assert "_prediction_runner" not in restored.__dict__
    np.testing.assert_array_equal(restored.predict_proba(X[:50]), first)
    with torch.no_grad():
        logits = clf.module_(torch.as_tensor(clf.preprocess_(
            torch.as_tensor(X[:50]).unsqueeze(1)))).numpy()
    np.testing.assert_allclose(first, torch.softmax(torch.as_tensor(logits), 1).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_fitted_classifier_exposes_its_network_with_one_fingerprint(digits, tmp_path):
    X, y = digits
    clf = SoftmaxClassifier("lenet5", epochs=1, random_state=0).fit(X, y)
    network = clf.network_
    assert network.module is clf.module_ and network.arch == "lenet5"
    assert network.weights.kind == "trained"
    assert "random weights" in network.weights.description
    path = clf.save(tmp_path / "lenet5.pt")
    via_name = load_network("lenet5", path)
    via_file = load_network(path)
    via_module = load_network(clf.module_)
    via_classifier = load_network(clf)
    prints = {n.fingerprint for n in (network, via_name, via_file, via_module, via_classifier)}
    assert len(prints) == 1
    ext = DeepFeatureExtractor(clf).fit()
    assert ext.model_fingerprint_ == network.fingerprint and ext.model_name_ == "lenet5"
    assert ext.preprocess_ == clf.preprocess_
    assert SoftmaxClassifier.load(path).network_.fingerprint == network.fingerprint
