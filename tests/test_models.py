"""The model zoo: every model builds, runs, and round-trips its weights through .pt/.safetensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from featclf.models import (
    WeightsError,
    get_model,
    get_model_spec,
    list_models,
    read_checkpoint,
    save_checkpoint,
)

ZOO = ["lenet5", "seed_cnn", "alexnet", "vgg16", "resnet18", "resnet50"]


def test_zoo_lists_the_seed_systems():
    assert set(ZOO) <= set(list_models())
    assert "mobilenet_v3_small" in list_models(include_torchvision=True)


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_model_round_trips_weights(name, tmp_path):
    spec = get_model_spec(name)
    torch.manual_seed(0)
    model = get_model(name, num_classes=7)
    size = 28 if spec.preprocess.channels == 1 else 64
    x = torch.randn(2, spec.preprocess.channels, size, size)
    with torch.inference_mode():
        ref = model(x)
    assert ref.shape == (2, 7)
    assert model.get_submodule(spec.head).in_features == spec.feature_dim
    for suffix in (".pt", ".safetensors"):
        path = tmp_path / f"{name}{suffix}"
        save_checkpoint(path, model.state_dict(), {"model": name})
        again = get_model(name, weights=path)
        with torch.inference_mode():
            assert torch.equal(again(x), ref)
    # torch.load(weights_only=True) reads featclf's .pt checkpoints without featclf
    payload = torch.load(tmp_path / f"{name}.pt", weights_only=True)
    assert set(payload["state_dict"]) == set(model.state_dict())


def test_plain_state_dict_and_new_head(tmp_path):
    model = get_model("lenet5")
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    five = get_model("lenet5", weights=tmp_path / "plain.pth", num_classes=5)
    assert five.output.out_features == 5
    assert torch.equal(five.c1[0].weight, model.c1[0].weight)


def test_weights_for_another_architecture_list_the_keys(tmp_path):
    torch.save(get_model("seed_cnn").state_dict(), tmp_path / "seed.pt")
    with pytest.raises(WeightsError, match=r"missing keys: .*c1\.0\.weight"):
        get_model("lenet5", weights=tmp_path / "seed.pt")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": get_model("lenet5").state_dict(), "x": _Payload(str(marker))}, evil)
    with pytest.raises(WeightsError, match="refused"):
        get_model("lenet5", weights=evil)
    assert not marker.exists()


def test_unknown_model_suggests_names():
    with pytest.raises(ValueError, match="Did you mean 'lenet5'"):
        get_model("lenet")


def test_offline_torchvision_weights_name_explains_local_files(monkeypatch, tmp_path):
    # Point torch's cache to an empty folder and cut the network: the download must fail clearly.
    import urllib.request

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    with pytest.raises(WeightsError, match="pass its path instead"):
        get_model("resnet18", weights="IMAGENET1K_V1")


def test_torchvision_weights_bring_their_own_evaluation_recipe():
    from featclf.models.weights import torchvision_preprocess

    v2 = torchvision_preprocess("resnet50", "DEFAULT")  # IMAGENET1K_V2: resize 232, crop 224
    assert (v2.resize, v2.output_size, v2.interpolation) == (232, (224, 224), "bilinear")
    assert torchvision_preprocess("resnet50", "IMAGENET1K_V1").resize == 256
    vit = torchvision_preprocess("vit_b_16", "IMAGENET1K_SWAG_E2E_V1")
    assert (vit.output_size, vit.interpolation) == ((384, 384), "bicubic")
    assert torchvision_preprocess("resnet50", "no-such-weights") is None
    assert torchvision_preprocess("resnet50", None) is None


@pytest.mark.slow
def test_extractor_with_cached_torchvision_weights_uses_their_recipe(monkeypatch, tmp_path):
    """torch.hub reads an already-cached weights file without downloading: a state dict saved
    here under the IMAGENET1K_V2 file name stands in for the real one, offline."""
    from torchvision.models import ResNet50_Weights

    from featclf import DeepFeatureExtractor

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(5)
    state = get_model("resnet50").state_dict()
    torch.save(state, cache / Path(ResNet50_Weights.IMAGENET1K_V2.url).name)
    ext = DeepFeatureExtractor("resnet50", weights="DEFAULT", device="cpu").fit()
    assert ext.preprocess_.resize == 232 and ext.preprocess_.output_size == (224, 224)
    loaded = ext.feature_model_.state_dict()
    (conv1,) = [k for k in loaded if k.endswith("conv1.weight") and "layer" not in k]
    assert torch.equal(loaded[conv1], state["conv1.weight"])
    assert ext.transform(np.zeros((1, 250, 300, 3), np.uint8)).shape == (1, 2048)
    assert DeepFeatureExtractor("resnet50").fit().preprocess_.resize == 256  # random weights


def test_checkpoint_metadata_survives(tmp_path):
    save_checkpoint(tmp_path / "m.pt", get_model("lenet5").state_dict(),
                    {"model": "lenet5", "classes": ["a", "b"]})
    ck = read_checkpoint(tmp_path / "m.pt")
    assert ck.metadata["classes"] == ["a", "b"]
    assert np.isclose(sum(v.numel() for v in ck.state_dict.values()),
                      sum(p.numel() for p in get_model("lenet5").state_dict().values()))
