"""Networks: every model builds, runs, and round-trips its weights through .pt/.safetensors;
load_network gives one network, with one fingerprint, however it is given."""

from __future__ import annotations

import pickle
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
    LeNet5,
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


def _cache_torchvision_weights(monkeypatch, tmp_path, member, state):
    """torch.hub reads an already-cached weights file without downloading: a state dict saved
    under ``member``'s file name in an empty TORCH_HOME stands in for the real one, offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(state, cache / Path(member.url).name)


def test_torchvision_weights_are_loaded_and_bring_their_recipe(monkeypatch, tmp_path):
    from torchvision.models import ResNet18_Weights, ResNet50_Weights

    state = load_network("resnet18", seed=5).module.state_dict()
    _cache_torchvision_weights(monkeypatch, tmp_path, ResNet18_Weights.IMAGENET1K_V1, state)
    for weights in ("DEFAULT", "IMAGENET1K_V1", ResNet18_Weights.IMAGENET1K_V1):
        net = load_network("resnet18", weights)
        assert net.weights == WeightsSource("torchvision",
                                            "torchvision ResNet18_Weights.IMAGENET1K_V1")
        assert torch.equal(net.module.conv1.weight, state["conv1.weight"])
        assert net.preprocess == ImagePreprocess(224, 3, IMAGENET_MEAN, IMAGENET_STD, resize=256)
        assert net.fingerprint == load_network("resnet18", seed=5).fingerprint
    with pytest.raises(WeightsError, match="torchvision weights of another architecture"):
        load_network("resnet18", ResNet50_Weights.IMAGENET1K_V1)
    with pytest.raises(WeightsError, match="choose one of: DEFAULT, IMAGENET1K_V1"):
        load_network("resnet18", "IMAGENET1K_V2")
    with pytest.raises(WeightsError, match="only with a model name"):
        load_network(load_network("resnet18").module, "DEFAULT")
    with pytest.raises(WeightsError, match="'lenet5' has no torchvision weights"):
        load_network("lenet5", "DEFAULT")


@pytest.mark.slow
def test_extractor_with_cached_torchvision_weights_uses_their_recipe(monkeypatch, tmp_path):
    from torchvision.models import ResNet50_Weights

    from featclf import DeepFeatureExtractor

    state = load_network("resnet50", seed=5).module.state_dict()
    _cache_torchvision_weights(monkeypatch, tmp_path, ResNet50_Weights.IMAGENET1K_V2, state)
    net = load_network("resnet50", weights="DEFAULT")  # IMAGENET1K_V2: resize 232, crop 224
    assert (net.preprocess.resize, net.preprocess.output_size) == (232, (224, 224))
    assert torch.equal(net.module.conv1.weight, state["conv1.weight"])
    ext = DeepFeatureExtractor("resnet50", weights="DEFAULT", device="cpu").fit()
    assert ext.preprocess_ == net.preprocess
    assert ext.network_.fingerprint == net.fingerprint
    assert ext.transform(np.zeros((1, 250, 300, 3), np.uint8)).shape == (1, 2048)
    # Random weights take the architecture's original recipe (IMAGENET1K_V1: 256, then 224).
    assert load_network("resnet50").preprocess.resize == 256
    assert DeepFeatureExtractor("resnet50").fit().preprocess_.resize == 256


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
    base = load_network(name)
    state = base.module.state_dict()
    checkpoint, bare = tmp_path / f"{name}.pt", tmp_path / f"{name}-bare.safetensors"
    save_checkpoint(checkpoint, state, {"model": name})
    save_checkpoint(bare, state)
    other = load_network(name, seed=99).module  # same class, other weights: they get replaced
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
        "Network + state dict": load_network(load_network(name, seed=99), weights=state),
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
    assert from_dict.kind == "state_dict"
    assert from_dict.description.startswith("the given state dict (xxh3 ")
    path = tmp_path / "w.pt"
    save_checkpoint(path, state, {"model": "lenet5"})
    from_file = load_network(path).weights
    assert from_file.kind == "file"
    assert from_file.description == f"file {path} ({from_dict.description.split('(')[1]}"
    assert load_network(LeNet5()).weights == WeightsSource("module",
                                                           "the given LeNet5's own weights")
    trained = WeightsSource("trained", "trained by SoftmaxClassifier")
    assert trained.to_dict() == {"kind": "trained", "description": "trained by SoftmaxClassifier"}
    with pytest.raises(ValueError, match="kind='pretrained' is not one of"):
        WeightsSource("pretrained", "?")


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
