"""Networks: every model builds, runs, and round-trips its weights through .pt/.safetensors;
load_network gives one network, with one fingerprint, however it is given."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from featclf.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MNIST_MEAN,
    MNIST_STD,
    ImagePreprocess,
)
from featclf.models import (
    CheckpointError,
    LeNet5,
    MissingWeightsError,
    Network,
    WeightsError,
    WeightsSource,
    get_model,
    get_model_spec,
    list_models,
    load_network,
    read_checkpoint,
    register_model,
    save_checkpoint,
)
from featclf.params import InvalidParameterError

ZOO = ["lenet5", "seed_cnn", "alexnet", "vgg16", "resnet18", "resnet50"]


def test_registry_lists_featclf_models_and_torchvision_on_request():
    assert {"lenet5", "seed_cnn"} <= set(list_models())
    assert not {"resnet18", "vgg16"} & set(list_models())  # torchvision's registry lists them
    assert set(ZOO) | {"mobilenet_v3_small"} <= set(list_models(include_torchvision=True))


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_model_round_trips_weights(name, tmp_path):
    spec = get_model_spec(name)
    torch.manual_seed(0)
    model = get_model(name, weights="random", num_classes=7)
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


def test_failed_download_of_torchvision_weights_says_where_to_put_the_file(monkeypatch,
                                                                           tmp_path):
    # Online, but every HTTPS connection goes to a closed local port: a real failed download.
    monkeypatch.delenv("FEATCLF_OFFLINE")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for var in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(MissingWeightsError, match=f"downloading it failed .*put it in "
                       f"{cached.parent} \\(as {cached}\\), or pass weights='FILE'"):
        get_model("resnet18", weights="IMAGENET1K_V1")
    assert not cached.exists()  # no partial download under the final name


def test_torchvision_weights_bring_their_own_evaluation_recipe():
    from featclf.models.weights import torchvision_preprocess

    v2 = torchvision_preprocess("resnet50", "DEFAULT")  # IMAGENET1K_V2: resize 232, crop 224
    assert (v2.resize, v2.output_size, v2.interpolation) == (232, (224, 224), "bilinear")
    assert torchvision_preprocess("resnet50", "IMAGENET1K_V1").resize == 256
    vit = torchvision_preprocess("vit_b_16", "IMAGENET1K_SWAG_E2E_V1")
    assert (vit.output_size, vit.interpolation) == ((384, 384), "bicubic")
    assert torchvision_preprocess("resnet50", "no-such-weights") is None
    assert torchvision_preprocess("resnet50", None) is None


def _cache_torchvision_weights(monkeypatch, tmp_path, member, state):
    """torch.hub reads an already-cached weights file without downloading: a state dict saved
    under ``member``'s file name in an empty TORCH_HOME stands in for the real one, offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(state, cache / Path(member.url).name)


def test_torchvision_weights_are_loaded_and_bring_their_recipe(monkeypatch, tmp_path):
    from torchvision.models import ResNet18_Weights, ResNet50_Weights

    state = load_network("resnet18", "random", seed=5).module.state_dict()
    _cache_torchvision_weights(monkeypatch, tmp_path, ResNet18_Weights.IMAGENET1K_V1, state)
    for weights in ("DEFAULT", "IMAGENET1K_V1", ResNet18_Weights.IMAGENET1K_V1):
        net = load_network("resnet18", weights)
        assert net.weights == WeightsSource("pretrained",
                                            "torchvision ResNet18_Weights.IMAGENET1K_V1")
        assert torch.equal(net.module.conv1.weight, state["conv1.weight"])
        assert net.preprocess == ImagePreprocess(224, 3, IMAGENET_MEAN, IMAGENET_STD, resize=256)
        assert net.fingerprint == load_network("resnet18", "random", seed=5).fingerprint
    with pytest.raises(WeightsError, match="torchvision weights of another architecture"):
        load_network("resnet18", ResNet50_Weights.IMAGENET1K_V1)
    with pytest.raises(WeightsError, match="choose one of: DEFAULT, IMAGENET1K_V1"):
        load_network("resnet18", "IMAGENET1K_V2")
    with pytest.raises(WeightsError, match="only with a model name"):
        load_network(load_network("resnet18", "random").module, "DEFAULT")
    with pytest.raises(WeightsError, match="'lenet5' has no torchvision weights"):
        load_network("lenet5", "DEFAULT")


@pytest.mark.slow
def test_extractor_with_cached_torchvision_weights_uses_their_recipe(monkeypatch, tmp_path):
    from torchvision.models import ResNet50_Weights

    from featclf import DeepFeatureExtractor

    state = load_network("resnet50", "random", seed=5).module.state_dict()
    _cache_torchvision_weights(monkeypatch, tmp_path, ResNet50_Weights.IMAGENET1K_V2, state)
    net = load_network("resnet50", weights="DEFAULT")  # IMAGENET1K_V2: resize 232, crop 224
    assert (net.preprocess.resize, net.preprocess.output_size) == (232, (224, 224))
    assert torch.equal(net.module.conv1.weight, state["conv1.weight"])
    ext = DeepFeatureExtractor("resnet50", weights="DEFAULT", device="cpu").fit()
    assert ext.preprocess_ == net.preprocess
    assert ext.network_.fingerprint == net.fingerprint
    assert ext.transform(np.zeros((1, 250, 300, 3), np.uint8)).shape == (1, 2048)
    # Random weights take the architecture's original recipe (IMAGENET1K_V1: 256, then 224).
    assert load_network("resnet50", "random").preprocess.resize == 256
    assert DeepFeatureExtractor("resnet50", weights="random").fit().preprocess_.resize == 256


def test_checkpoint_metadata_survives(tmp_path):
    save_checkpoint(tmp_path / "m.pt", get_model("lenet5").state_dict(),
                    {"model": "lenet5", "classes": ["a", "b"]})
    ck = read_checkpoint(tmp_path / "m.pt")
    assert ck.metadata["classes"] == ["a", "b"]
    assert np.isclose(sum(v.numel() for v in ck.state_dict.values()),
                      sum(p.numel() for p in get_model("lenet5").state_dict().values()))


# ---------------------------------------------------------------- load_network: one network


def _entry_points(name: str, tmp_path: Path) -> dict[str, Network]:
    """The same network (random weights, seed 0) through every way of giving it."""
    base = load_network(name, "random")
    state = base.module.state_dict()
    checkpoint, bare = tmp_path / f"{name}.pt", tmp_path / f"{name}-bare.safetensors"
    save_checkpoint(checkpoint, state, {"model": name})
    save_checkpoint(bare, state)
    # same class, other weights: they get replaced
    other = load_network(name, "random", seed=99).module
    return {
        "name": base,
        "checkpoint file": load_network(checkpoint),
        "name + checkpoint": load_network(name, weights=checkpoint),
        "name + bare file": load_network(name, weights=str(bare)),
        "name + Checkpoint": load_network(name, weights=read_checkpoint(checkpoint)),
        "name + state dict": load_network(name, weights=state),
        "module": load_network(base.module),
        "module + weights": load_network(other, weights=checkpoint),
        "Network": load_network(base),
        "Network + state dict": load_network(load_network(name, "random", seed=99),
                                             weights=state),
    }


@pytest.mark.parametrize("name", ["lenet5", "resnet18"])
def test_one_network_one_fingerprint_however_it_is_given(name, tmp_path):
    nets = _entry_points(name, tmp_path)
    fingerprints = {how: net.fingerprint for how, net in nets.items()}
    assert len(set(fingerprints.values())) == 1, fingerprints
    spec = get_model_spec(name)
    for how, net in nets.items():
        assert (net.head, net.feature_dim) == (spec.head, spec.feature_dim), how
        assert not net.module.training, how
        if how.startswith("module"):
            assert net.arch is None
        else:
            assert net.arch == name and net.preprocess == spec.preprocess, how


def test_lenet5_module_built_by_hand_has_the_registry_fingerprint():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        by_hand = LeNet5()
    assert load_network(by_hand).fingerprint == load_network("lenet5").fingerprint


def test_different_weights_give_different_fingerprints():
    base = load_network("lenet5")
    assert load_network("lenet5", seed=1).fingerprint != base.fingerprint
    assert load_network(base, num_classes=3).fingerprint != base.fingerprint
    nudged = load_network("lenet5").module
    with torch.no_grad():
        nudged.output.bias[0] += 1e-3
    assert load_network(nudged).fingerprint != base.fingerprint
    # Same weights, other classes: a Linear(4, 2) is not a network of another class.
    lin = nn.Linear(4, 2)
    seq = nn.Sequential(lin)
    assert load_network(lin).fingerprint != load_network(seq).fingerprint


def test_random_weights_come_from_the_seed_or_the_global_rng():
    assert load_network("lenet5").fingerprint == load_network("lenet5", "random").fingerprint
    torch.manual_seed(3)
    a = load_network("lenet5", seed=None)
    torch.manual_seed(3)
    b = load_network("lenet5", seed=None)
    assert a.fingerprint == b.fingerprint != load_network("lenet5").fingerprint
    torch.manual_seed(3)
    assert torch.equal(get_model("lenet5").c1[0].weight, a.module.c1[0].weight)  # global RNG
    before = torch.random.get_rng_state()
    load_network("seed_cnn", num_classes=4)
    assert torch.equal(torch.random.get_rng_state(), before)  # a seeded build draws in a fork


def test_checkpoint_of_another_model_is_refused(tmp_path):
    path = tmp_path / "seed.pt"
    save_checkpoint(path, get_model("seed_cnn").state_dict(), {"model": "seed_cnn"})
    message = f"weights='{path}' is a checkpoint of model 'seed_cnn', not 'lenet5'"
    with pytest.raises(WeightsError, match=message):
        load_network("lenet5", weights=path)
    with pytest.raises(WeightsError, match=message):
        load_network(load_network("lenet5"), weights=path)  # a Network knows its architecture
    with pytest.raises(WeightsError, match=message):
        get_model("lenet5", weights=path)
    assert load_network(path).arch == "seed_cnn"
    with pytest.raises(ValueError, match="carries its own weights; leave weights=None"):
        load_network(path, weights=path)


def test_checkpoints_without_an_architecture_say_what_to_pass(tmp_path):
    bare = tmp_path / "bare.pt"
    torch.save(get_model("lenet5").state_dict(), bare)
    with pytest.raises(WeightsError, match="no featclf metadata naming its architecture.*"
                       "model='<name>'"):
        load_network(bare)
    custom = tmp_path / "custom.pt"
    save_checkpoint(custom, get_model("lenet5").state_dict(), {"model": None, "classes": [0]})
    with pytest.raises(WeightsError, match="holds a custom nn.Module, not a zoo model"):
        load_network(custom)
    assert load_network(LeNet5(), weights=custom).weights.kind == "file"


def test_checkpoint_preprocess_and_metadata_come_with_the_weights(tmp_path):
    pre = ImagePreprocess(32, 1, (0.5,), (0.25,))
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, get_model("lenet5", num_classes=3).state_dict(),
                    {"model": "lenet5", "preprocess": pre.to_dict(), "classes": ["a", "b", "c"]})
    for net in (load_network(path), load_network("lenet5", weights=path),
                load_network(LeNet5(3), weights=path)):
        assert net.preprocess.to_dict() == pre.to_dict()
        assert net.metadata["classes"] == ["a", "b", "c"]
        assert net.module.output.out_features == 3
    assert load_network(path, num_classes=5).module.output.out_features == 5
    assert load_network("lenet5").preprocess == ImagePreprocess(28, 1, MNIST_MEAN, MNIST_STD)


def test_given_module_is_never_modified(tmp_path):
    module = get_model("lenet5")
    before = {k: v.clone() for k, v in module.state_dict().items()}
    assert load_network(module).module is module  # used as it is
    path = tmp_path / "other.pt"
    save_checkpoint(path, get_model("lenet5").state_dict(), {"model": "lenet5"})
    loaded = load_network(module, weights=path)
    resized = load_network(module, num_classes=4)
    assert loaded.module is not module and resized.module is not module
    assert resized.module.output.out_features == 4 and module.output.out_features == 10
    assert all(torch.equal(v, before[k]) for k, v in module.state_dict().items())
    net = load_network("lenet5")
    assert load_network(net) is net
    assert load_network(net, num_classes=2).module is not net.module
    with pytest.raises(ValueError, match="has no Linear head to resize to 3 classes"):
        load_network(nn.Sequential(nn.Conv2d(1, 2, 3)), num_classes=3)


class _Estimator:
    """A stand-in for a SoftmaxClassifier, fitted or not."""

    def __init__(self, network=None):
        if network is not None:
            self.network_ = network

    def get_params(self, deep=True):
        return {}


def test_fitted_estimator_gives_its_network(tmp_path):
    net = load_network("lenet5", num_classes=3)
    assert load_network(_Estimator(net)) is net
    path = tmp_path / "w.pt"
    save_checkpoint(path, get_model("lenet5", num_classes=3).state_dict(), {"model": "lenet5"})
    copy = load_network(_Estimator(net), weights=path)
    assert copy.module is not net.module and copy.weights.kind == "file"
    with pytest.raises(ValueError, match="_Estimator without a fitted network .* fit it first "
                       "or pass its saved checkpoint"):
        load_network(_Estimator())


def test_weights_source_describes_each_kind(tmp_path):
    assert load_network("lenet5").weights == WeightsSource("random", "random weights (seed 0)")
    assert load_network("lenet5", seed=7).weights.description == "random weights (seed 7)"
    assert load_network("lenet5", seed=None).weights.description == \
        "random weights (global RNG)"
    state = get_model("lenet5").state_dict()
    from_dict = load_network("lenet5", weights=state).weights
    assert from_dict.kind == "module"
    assert from_dict.description.startswith("the given state dict (xxh3 ")
    path = tmp_path / "w.pt"
    save_checkpoint(path, state, {"model": "lenet5"})
    from_file = load_network(path).weights
    assert from_file.kind == "file"
    assert from_file.description == f"file {path} ({from_dict.description.split('(')[1]}"
    assert load_network(LeNet5()).weights == WeightsSource("module",
                                                           "the given LeNet5's own weights")
    trained = WeightsSource("trained", "trained by SoftmaxClassifier")
    assert trained.to_dict() == {"kind": "trained", "description": "trained by SoftmaxClassifier",
                                 "explicit": False}
    with pytest.raises(ValueError, match="kind='torchvision' is not one of"):
        WeightsSource("torchvision", "?")


def test_network_pickles_with_its_fingerprint():
    net = load_network("lenet5")
    again = pickle.loads(pickle.dumps(net))
    assert again.fingerprint == net.fingerprint and again.weights == net.weights
    assert repr(net) == "Network(lenet5, random weights (seed 0), head='output', feature_dim=84)"


def test_register_model_refuses_a_taken_name():
    spec = get_model_spec("lenet5")
    kwargs = dict(preprocess=spec.preprocess, head="output", feature_dim=84)
    for taken in ("lenet5", "resnet18"):  # featclf's own, and torchvision's
        with pytest.raises(ValueError, match=f"^An entry is already registered under the name "
                           f"'{taken}'.$"):
            register_model(taken, **kwargs)(LeNet5)
    assert get_model_spec("lenet5") is spec
    assert get_model_spec("resnet18").source == "torchvision"


def test_invalid_parameters_use_scikit_learns_wording():
    with pytest.raises(InvalidParameterError, match="The 'num_classes' parameter of load_network "
                       "must be an int in the range \\[1, inf\\) or None. Got 0 instead."):
        load_network("lenet5", num_classes=0)
    with pytest.raises(InvalidParameterError, match="'num_classes' parameter of get_model"):
        get_model("lenet5", num_classes=-2)
    with pytest.raises(ValueError, match="model=3 is not a network"):
        load_network(3)
    with pytest.raises(ValueError, match="unknown model 'lenet'. Did you mean 'lenet5'"):
        load_network("lenet")


def test_models_command_lists_featclf_models_and_counts_torchvision(capsys):
    from featclf.cli import main

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["name", "input", "features", "head"]
    assert [line.split()[:4] for line in lines[1:3]] == [["lenet5", "1x28x28", "84", "output"],
                                                        ["seed_cnn", "1x28x28", "128", "output"]]
    assert "torchvision models" in lines[-1] and "featclf models --all" in lines[-1]
    assert main(["models", "--all"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert rows["resnet50"].split()[1:5] == ["3x224x224", "2048", "fc", "torchvision"]
    assert "IMAGENET1K_V2 (DEFAULT)" in rows["resnet50"]
    assert rows["squeezenet1_0"].split()[2:4] == ["-", "-"]  # no Linear head


@pytest.mark.parametrize("name, resize, size, interpolation", [
    ("resnet50", 256, (224, 224), "bilinear"),  # IMAGENET1K_V1's recipe, not DEFAULT's 232
    ("mobilenet_v3_large", 256, (224, 224), "bilinear"),
    ("efficientnet_b3", 320, (300, 300), "bicubic"),
])
def test_random_torchvision_weights_get_the_first_published_recipe(name, resize, size,
                                                                     interpolation):
    # The rule for weights that bring no recipe of their own: the architecture's first
    # torchvision weights (the input it was published with), interpolation included.
    network = load_network(name, "random")
    assert network.weights.kind == "random"
    pre = network.preprocess
    assert (pre.resize, pre.output_size, pre.interpolation) == (resize, size, interpolation)


# ---------------------------------------------------------------- weights never random by surprise


def test_torchvision_default_is_pretrained_and_offline_names_the_file(monkeypatch, tmp_path):
    from torchvision.models import ResNet18_Weights

    from featclf.errors import cli_messages
    from featclf.models.weights import torchvision_preprocess

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("FEATCLF_OFFLINE", "1")
    member = ResNet18_Weights.DEFAULT
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(MissingWeightsError) as err:
        load_network("resnet18")
    message = str(err.value)
    for part in (str(cached), f"put it in {cached.parent} ", member.url, "FEATCLF_OFFLINE=1",
                 "weights='FILE'", "weights='random'"):
        assert part in message, part
    with cli_messages(), pytest.raises(MissingWeightsError, match="--weights FILE .*"
                                       "--weights random"):
        load_network("resnet18")
    assert not cached.exists()
    # The file in torch's cache is used offline; torch.hub checks its hash only on download.
    state = load_network("resnet18", "random", seed=3).module.state_dict()
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    for net in (load_network("resnet18"), load_network("resnet18", num_classes=1000)):
        assert net.weights == WeightsSource("pretrained",
                                            "torchvision ResNet18_Weights.IMAGENET1K_V1")
        assert all(torch.equal(v, state[k]) for k, v in net.module.state_dict().items())
        assert net.preprocess == torchvision_preprocess("resnet18", member)
    assert torch.equal(get_model("resnet18").fc.weight, state["fc.weight"])


def test_random_weights_say_whether_they_were_asked_for():
    asked = load_network("resnet18", "random").weights
    assert asked == WeightsSource("random", "random weights (seed 0)", explicit=True)
    assert load_network("lenet5").weights.explicit is False  # seed networks start random
    assert load_network("lenet5", "random").weights.explicit is True
    assert load_network(load_network("lenet5"), "random").weights.explicit is True


def _damaged(kind: str, tmp_path: Path) -> Path:
    """A real file of each kind of damage, next to a good checkpoint of lenet5."""
    state = get_model("lenet5").state_dict()
    good = {"model": "lenet5", "preprocess": get_model_spec("lenet5").preprocess.to_dict()}
    pt, st = tmp_path / "good.pt", tmp_path / "good.safetensors"
    save_checkpoint(pt, state, good)
    save_checkpoint(st, state, good)
    path = tmp_path / f"{kind}.safetensors" if "safetensors" in kind else tmp_path / f"{kind}.pt"
    payload = {"format": "featclf-checkpoint", "metadata": json.dumps(good), "state_dict": state}
    if kind == "truncated":
        path.write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])
    elif kind == "truncated safetensors":
        path.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    elif kind == "garbage":
        path.write_bytes(b"not a checkpoint at all " * 40)
    elif kind == "no metadata key":
        torch.save({k: v for k, v in payload.items() if k != "metadata"}, path)
    elif kind == "bad metadata json":
        torch.save({**payload, "metadata": '{"model": "lenet5", '}, path)
    elif kind == "bad metadata json safetensors":
        from safetensors.torch import save_file

        save_file(dict(state), str(path), metadata={"featclf": "{oops"})
    elif kind == "metadata not an object":
        torch.save({**payload, "metadata": "[1, 2]"}, path)
    elif kind == "preprocess without channels":
        pre = {k: v for k, v in good["preprocess"].items() if k != "channels"}
        torch.save({**payload, "metadata": json.dumps({**good, "preprocess": pre})}, path)
    elif kind == "model not a string":
        torch.save({**payload, "metadata": json.dumps({**good, "model": 5})}, path)
    elif kind == "tensors of another architecture":
        torch.save(get_model("seed_cnn").state_dict(), path)
    elif kind == "not tensors":
        torch.save({"c1.0.weight": [1, 2, 3]}, path)
    return path


@pytest.mark.parametrize("kind, says", [
    ("truncated", "not a readable PyTorch checkpoint"),
    ("truncated safetensors", "not a readable safetensors file"),
    ("garbage", "not a PyTorch checkpoint"),
    ("no metadata key", "featclf checkpoint without its 'metadata' entry"),
    ("bad metadata json", "metadata is not valid JSON"),
    ("bad metadata json safetensors", "metadata is not valid JSON"),
    ("metadata not an object", "metadata is a JSON list, not an object"),
    ("preprocess without channels", "'preprocess' lacks the field 'channels'"),
    ("model not a string", "field 'model' is int 5, not str"),
    ("tensors of another architecture", "missing keys: .*c1.0.weight"),
    ("not tensors", "entry 'c1.0.weight' is a list"),
])
def test_damaged_checkpoints_name_the_file_and_what_is_wrong(kind, says, tmp_path):
    path = _damaged(kind, tmp_path)
    loads = [lambda: load_network("lenet5", weights=path)]
    if kind != "tensors of another architecture":  # as model=, a bare file names no model
        loads.append(lambda: load_network(path))
    for load in loads:
        with pytest.raises(CheckpointError) as err:
            load()
        assert str(path) in str(err.value)
        assert re.search(says, str(err.value)), str(err.value)


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool])
def test_weight_files_of_a_non_float_dtype_are_refused(dtype, tmp_path):
    state = get_model("lenet5").state_dict()
    path = tmp_path / "ints.pt"
    torch.save({k: v.to(dtype) for k, v in state.items()}, path)
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(CheckpointError, match=f"{re.escape(str(path))}: tensor 'c1.0.weight' "
                       f"is {name}, but LeNet5 needs floating-point weights"):
        load_network("lenet5", weights=path)
    half = tmp_path / "half.pt"  # other floating dtypes are weights, cast as usual
    torch.save({k: v.half() for k, v in state.items()}, half)
    loaded = load_network("lenet5", weights=half).module.c1[0].weight
    assert torch.equal(loaded, state["c1.0.weight"].half().float())


_SAVER = """
import sys, torch
from featclf.models.weights import save_checkpoint
path = sys.argv[1]
for k in range(1, 1000):
    state = {"w": torch.full((4_000_000,), float(k))}
    print("saving", k, flush=True)
    save_checkpoint(path, state, {"model": "big", "k": k})
    print("saved", k, flush=True)
"""


def _written_temps(folder: Path) -> list[Path]:
    found = []
    for tmp in folder.glob(".ck.pt.*.tmp"):
        try:
            if tmp.stat().st_size > 0:
                found.append(tmp)
        except FileNotFoundError:  # renamed into place meanwhile
            pass
    return found


@pytest.mark.slow  # the saver process imports torch
def test_kill_during_checkpoint_save_leaves_the_old_checkpoint(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"w": torch.zeros(4_000_000)}, {"model": "big", "k": 0})
    size = path.stat().st_size
    proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], stdout=subprocess.PIPE,
                            text=True)
    temps: list[Path] = []
    try:
        assert proc.stdout.readline().split() == ["saving", "1"]
        deadline = time.monotonic() + 30
        # Mid-write: the temporary file has bytes (or, were the save not atomic, the file
        # changed).
        while not temps and path.stat().st_size == size and time.monotonic() < deadline:
            temps = _written_temps(tmp_path)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = [int(line.split()[1]) for line in proc.stdout.read().splitlines()
             if line.startswith("saved")]
    ck = read_checkpoint(path)  # whole, not partial: the last completed save
    k = saved[-1] if saved else 0
    assert ck.metadata["k"] == k and torch.equal(ck.state_dict["w"], torch.full((4_000_000,),
                                                                               float(k)))
    assert temps, "killed before the save wrote its temporary file"
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["ck.pt"]
    leftovers = list(tmp_path.glob(".ck.pt.*.tmp"))
    if leftovers:  # the killed writer's temporary file: the next save removes it
        save_checkpoint(path, {"w": torch.ones(3)}, {"model": "big"})
        assert not any(p.exists() for p in leftovers)


def test_models_layers_lists_the_graph_nodes(capsys):
    import torchvision
    from torchvision.models.feature_extraction import get_graph_node_names

    from featclf.cli import main
    from featclf.models import feature_model

    assert main(["models", "--layers", "resnet18"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "penultimate  (the input of fc, 512 features; the default)"
    assert lines[1:] == get_graph_node_names(torchvision.models.resnet18().eval())[1]
    module = load_network("resnet18", "random").module
    out = feature_model(module, layer=lines[-5], head=None)(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 512)  # layer4.1.add: a listed name works as layer=
    assert main(["models", "--layers", "resnt18"]) == 1
    assert "unknown model 'resnt18'. Did you mean 'resnet18'" in capsys.readouterr().err


def test_models_command_module_does_not_import_torch():
    code = "import sys, featclf.cli.models_cmd; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("name", ["densenet121", "googlenet"])
def test_pretrained_files_in_torchvisions_own_layout_load(name, monkeypatch, tmp_path):
    # densenet files keep pre-1.0 key names ('norm.1'); googlenet's carry its auxiliary
    # classifiers: torchvision's builders adapt both, and so must featclf.
    import torchvision

    from featclf.models.weights import torchvision_cache_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    extra = {"aux_logits": True, "init_weights": False} if name == "googlenet" else {}
    built = torchvision.models.get_model(name, **extra).state_dict()

    def published_name(key):  # the file's name of a key of featclf's network
        return re.sub(r"(denselayer\d+\.(norm|relu|conv))([12])", r"\1.\3", key)

    if name == "densenet121":  # written before BatchNorm counted batches
        published = {published_name(k): v for k, v in built.items()
                     if not k.endswith("num_batches_tracked")}
        assert "features.denseblock1.denselayer1.norm.1.weight" in published
    else:
        published = built
        assert any(k.startswith("aux1.") for k in published)
    cached = torchvision_cache_file(name, "DEFAULT")
    cached.parent.mkdir(parents=True)
    torch.save(published, cached)
    net = load_network(name)
    assert net.weights.kind == "pretrained"
    loaded = {k: v for k, v in net.module.state_dict().items()
              if not k.endswith("num_batches_tracked")}
    assert all(torch.equal(v, published[published_name(k)]) for k, v in loaded.items())
    assert len(loaded) == len([k for k in published if not k.startswith(("aux1.", "aux2."))
                               and not k.endswith("num_batches_tracked")])
    assert getattr(net.module, "transform_input", True) is True
