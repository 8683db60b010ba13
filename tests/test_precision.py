"""Numeric precision and device: bf16 really runs, each precision has its own cache key.

bf16 on the CPU runs here; the CUDA tests (marked ``gpu``) are skipped without a GPU and run
with ``make bench-gpu`` (``pytest -m gpu tests``). Tests that compare to fp32 tolerances pin
``device="cpu"`` so a CUDA host does not switch them to bf16.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featclf.devices import resolve_device, resolve_precision
from featclf.extract import DeepFeatureExtractor
from featclf.models import get_model, save_checkpoint
from featclf.params import InvalidParameterError
from featclf.store import FeatureStore

# bf16 keeps 8 significant bits (unit roundoff 2**-8 = 3.9e-3); a few layers of it put lenet5's
# features about 0.5% from fp32's. fp16 (11 bits) lands near 0.06%, fp32 run twice at 0.
BF16_MIN_REL, BF16_MAX_REL = 1e-3, 3e-2


@pytest.fixture
def lenet5_weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "lenet5.pt"
    save_checkpoint(path, get_model("lenet5").state_dict(), {"model": "lenet5"})
    return path


@pytest.fixture
def digits(mnist_small):
    return mnist_small[0][::8]  # 50 digits, 5 of each class


def _relative_errors(features: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per image: distance to the reference vector, relative to the reference's length."""
    return np.linalg.norm(features - reference, axis=1) / np.linalg.norm(reference, axis=1)


def _on_bf16_grid(features: np.ndarray) -> float:
    """Fraction of the values that bf16 represents exactly (what a bf16 layer outputs)."""
    t = torch.from_numpy(features)
    return float((t.to(torch.bfloat16).float() == t).float().mean())


def _differing_keys(a: dict, b: dict) -> set[str]:
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def test_bf16_on_cpu_runs_in_bf16_close_to_fp32_with_its_own_cache_key(lenet5_weights, digits):
    fp32 = DeepFeatureExtractor("lenet5", weights=lenet5_weights, device="cpu",
                                precision="fp32").fit()
    bf16 = DeepFeatureExtractor("lenet5", weights=lenet5_weights, device="cpu",
                                precision="bf16").fit()
    assert (fp32.precision_, bf16.precision_) == ("fp32", "bf16")
    reference, features = fp32.transform(digits), bf16.transform(digits)
    assert features.dtype == np.float32 and features.shape == reference.shape

    rel = _relative_errors(features, reference)
    # Close to fp32 as bf16 rounding allows, and no closer: bf16 ran (not fp32, not fp16).
    assert rel.max() < BF16_MAX_REL, rel.max()
    assert np.median(rel) > BF16_MIN_REL, np.median(rel)
    # The last layer ran in bf16: its outputs are bf16 numbers; fp32's are not.
    assert _on_bf16_grid(features) == 1.0
    assert _on_bf16_grid(reference) < 0.5
    # Deterministic: the same images give the same bf16 vectors.
    assert np.array_equal(bf16.transform(digits), features)

    # Its own cache key: the configurations differ in the precision and nothing else.
    config32, config16 = fp32.cache_config_(), bf16.cache_config_()
    assert (config32["precision"], config16["precision"]) == ("fp32", "bf16")
    assert _differing_keys(config32, config16) == {"precision"}
    assert FeatureStore.config_key(config32) != FeatureStore.config_key(config16)


def test_fp32_and_bf16_vectors_are_stored_apart_and_never_served_for_each_other(
        tmp_path, lenet5_weights, digits):
    n = len(digits)
    store = FeatureStore(tmp_path / "store")

    def extractor(precision):
        return DeepFeatureExtractor("lenet5", weights=lenet5_weights, device="cpu",
                                    precision=precision, store=store).fit()

    plain32 = DeepFeatureExtractor("lenet5", weights=lenet5_weights, device="cpu",
                                   precision="fp32").fit().transform(digits)
    plain16 = DeepFeatureExtractor("lenet5", weights=lenet5_weights, device="cpu",
                                   precision="bf16").fit().transform(digits)
    first32 = extractor("fp32").extract(digits)
    first16 = extractor("bf16").extract(digits)
    assert (first32.n_computed, first32.n_reused) == (n, 0)
    assert (first16.n_computed, first16.n_reused) == (n, 0)  # fp32's vectors not reused
    again32, again16 = extractor("fp32").extract(digits), extractor("bf16").extract(digits)
    assert (again32.n_reused, again16.n_reused) == (n, n)
    # Each precision reads back its own vectors.
    assert np.array_equal(again32.features, plain32)
    assert np.array_equal(again16.features, plain16)
    assert sorted(store.configs()) == sorted(
        FeatureStore.config_key(extractor(p).cache_config_()) for p in ("fp32", "bf16"))


def test_invalid_device_and_precision_read_as_parameter_errors():
    with pytest.raises(InvalidParameterError, match=r"The 'device' parameter of "
                       r"DeepFeatureExtractor must be 'auto', 'cpu', 'cuda', 'cuda:N' or a "
                       r"torch.device. Got 'gpu' instead."):
        resolve_device("gpu", owner="DeepFeatureExtractor")
    with pytest.raises(InvalidParameterError, match=r"The 'precision' parameter of BatchRunner "
                       r"must be a str among \{'auto', 'fp32', 'bf16', 'fp16'\}. Got 'fp8' "
                       r"instead."):
        resolve_precision("fp8", torch.device("cpu"), owner="BatchRunner")
    # Through an estimator, whichever of its parts checks the value.
    with pytest.raises(InvalidParameterError, match=r"The 'device' parameter (of \w+ )?must be "
                       r"'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device. Got 'gpu' instead."):
        DeepFeatureExtractor("lenet5", weights="random", device="gpu").fit()
    if not torch.cuda.is_available():  # a valid device on the wrong machine: not a parameter
        with pytest.raises(ValueError, match="asks for CUDA") as info:
            resolve_device("cuda")
        assert not isinstance(info.value, InvalidParameterError)


# ------------------------------------------------------------------------------------ CUDA


@pytest.mark.gpu
def test_cuda_bf16_and_cpu_fp32_vectors_have_separate_cache_keys(tmp_path, lenet5_weights,
                                                                 digits):
    n = len(digits)
    store = FeatureStore(tmp_path / "store")
    cuda = DeepFeatureExtractor("lenet5", weights=lenet5_weights, device="cuda",
                                store=store).fit()
    cpu = DeepFeatureExtractor("lenet5", weights=lenet5_weights, device="cpu",
                               store=store).fit()
    # "auto" precision: bf16 on CUDA, fp32 on the CPU.
    assert (cuda.device_.type, cuda.precision_) == ("cuda", "bf16")
    assert (cpu.device_.type, cpu.precision_) == ("cpu", "fp32")
    cuda_config, cpu_config = cuda.cache_config_(digits), cpu.cache_config_(digits)
    assert _differing_keys(cuda_config, cpu_config) == {"precision"}
    cuda_key, cpu_key = (FeatureStore.config_key(c) for c in (cuda_config, cpu_config))
    assert cuda_key != cpu_key

    on_cuda = cuda.extract(digits)
    assert (on_cuda.n_computed, on_cuda.n_reused) == (n, 0)
    assert store.configs() == [cuda_key]
    on_cpu = cpu.extract(digits)
    assert (on_cpu.n_computed, on_cpu.n_reused) == (n, 0)  # the CUDA vectors are not reused
    assert sorted(store.configs()) == sorted([cuda_key, cpu_key])

    # The CPU run holds CPU fp32 vectors; the CUDA ones are bf16, close to them but not equal.
    reference = DeepFeatureExtractor("lenet5", weights=lenet5_weights, device="cpu",
                                     precision="fp32").fit().transform(digits)
    np.testing.assert_allclose(on_cpu.features, reference, rtol=1e-5, atol=1e-6)
    rel = _relative_errors(on_cuda.features, reference)
    assert rel.max() < BF16_MAX_REL and np.median(rel) > BF16_MIN_REL, rel
    # Read back, each key serves its own vectors.
    assert np.array_equal(cpu.extract(digits).features, on_cpu.features)
    assert np.array_equal(cuda.extract(digits).features, on_cuda.features)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 2e-3), ("bf16", BF16_MAX_REL)])
def test_compile_on_cuda_matches_eager_and_compiles_once(lenet5_weights, digits, precision,
                                                         tolerance):
    from torch._dynamo.eval_frame import OptimizedModule
    from torch._dynamo.utils import counters

    def extractor(compile):
        return DeepFeatureExtractor("lenet5", weights=lenet5_weights, device="cuda",
                                    precision=precision, batch_size=32, compile=compile).fit()

    eager = extractor(False).transform(digits)
    compiled = extractor(True)
    graphs = counters["stats"]["unique_graphs"]
    features = compiled.transform(digits)  # 50 images: a full batch and a padded one
    # fp32 on CUDA may use TF32 convolutions, in eager and compiled alike: about 1e-3.
    assert _relative_errors(features, eager).max() < tolerance
    module = compiled.runner_.network()
    assert isinstance(module, OptimizedModule) and module is not compiled.feature_model_
    compiled_graphs = counters["stats"]["unique_graphs"]
    assert compiled_graphs > graphs  # torch.compile did run

    # A second call (a shorter batch, padded to the same shape) reuses the compiled module.
    again = compiled.transform(digits[:13])
    assert compiled.runner_.network() is module
    assert counters["stats"]["unique_graphs"] == compiled_graphs  # nothing compiled again
    np.testing.assert_allclose(again, features[:13], rtol=1e-4, atol=1e-5)


def test_featclf_device_chooses_what_auto_means(monkeypatch):
    monkeypatch.setenv("FEATCLF_DEVICE", "cpu")
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setenv("FEATCLF_DEVICE", "gpu")
    with pytest.raises(InvalidParameterError, match="of the FEATCLF_DEVICE variable must be"):
        resolve_device("auto")
    assert resolve_device("cpu") == torch.device("cpu")  # an explicit device wins
    if not torch.cuda.is_available():  # the variable is read: "cuda" is refused on this host
        monkeypatch.setenv("FEATCLF_DEVICE", "cuda")
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("auto")
