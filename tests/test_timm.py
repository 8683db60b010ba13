"""timm backbones and transformer features (issue 21): names, weights, preprocessing, token
pooling, blocks by index, per-block L2, torchvision ViT/Swin, fine-tuning and compare.

Every network here is a tiny configuration with random weights or weights the test saves;
nothing is downloaded (the conftest sets FEATCLF_OFFLINE=1).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")

from featclf.data import ImagePreprocess  # noqa: E402
from featclf.extract import DeepFeatureExtractor  # noqa: E402
from featclf.models import MissingWeightsError, load_network, save_checkpoint  # noqa: E402
from featclf.models.tokens import last_blocks  # noqa: E402

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)


def _model_input(extractor: DeepFeatureExtractor, images: np.ndarray) -> torch.Tensor:
    """What the extractor's network receives: its own preprocessing of the images."""
    return extractor.preprocess_(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())


def _tiny_vit(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=4,
                             num_classes=3, **kwargs).eval()


def _extractor(model, **kwargs) -> DeepFeatureExtractor:
    return DeepFeatureExtractor(model, device="cpu", **kwargs).fit()


def test_timm_vit_cls_and_mean_pooling_equal_a_hand_written_forward():
    # Two register tokens besides the class token: "mean" must leave all three out.
    vit = _tiny_vit(reg_tokens=2)
    assert vit.num_prefix_tokens == 3
    by_pooling = {p: _extractor(vit, pooling=p) for p in ("avg", "cls", "mean")}
    x = _model_input(by_pooling["cls"], IMAGES)
    with torch.no_grad():
        tokens = vit.forward_features(x)  # (n, 3 + 16, 192), after the final norm
        head_input = vit.forward_head(tokens, pre_logits=True)
    expected = {"cls": tokens[:, 0], "mean": tokens[:, 3:].mean(dim=1), "avg": head_input}
    for pooling, extractor in by_pooling.items():
        features = extractor.transform(IMAGES)
        assert features.shape == (5, 192)
        np.testing.assert_allclose(features, expected[pooling].numpy(), rtol=1e-5, atol=1e-5)
    # Had the register tokens been averaged in, "mean" would be this instead:
    wrong = tokens[:, 1:].mean(dim=1).numpy()
    assert np.abs(by_pooling["mean"].transform(IMAGES) - wrong).max() > 1e-3
    # timm's preprocessing of these weights (crop_pct 0.9, bicubic, mean/std 0.5) at the
    # size the model was built for, recorded in the cache key with the pooling.
    configs = {p: e.cache_config_() for p, e in by_pooling.items()}
    recorded = configs["cls"]["preprocess"]
    assert {k: recorded[k] for k in ("size", "mean", "std", "resize", "interpolation")} == {
        "size": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3, "resize": 35,
        "interpolation": "bicubic"}
    assert len({json.dumps(c, sort_keys=True) for c in configs.values()}) == 3


def test_last_four_class_tokens_are_dinov2s_probe_and_l2_is_per_block():
    vit = _tiny_vit()
    probe = _extractor(vit, layer=last_blocks(4), pooling="cls")
    probe_l2 = _extractor(vit, layer=last_blocks(4), pooling="cls+l2")
    x = _model_input(probe, IMAGES)
    with torch.no_grad():  # timm's own reading: every block through the final norm
        blocks = vit.forward_intermediates(x, indices=4, norm=True, output_fmt="NLC",
                                           return_prefix_tokens=True, intermediates_only=True)
    expected = torch.cat([prefix[:, 0] for _, prefix in blocks], dim=1).numpy()
    features = probe.transform(IMAGES)
    assert features.shape == (5, 4 * 192)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)
    normalised = probe_l2.extract(IMAGES)
    for i, block in enumerate(last_blocks(4)):
        raw = expected[:, i * 192:(i + 1) * 192]
        got = normalised.block(block)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(got, raw / np.linalg.norm(raw, axis=1, keepdims=True),
                                   rtol=1e-4, atol=1e-6)
    # The last block by index is the final features (same norm); by name it is the raw one.
    last = _extractor(vit, layer=["-1", "blocks.3", "penultimate"], pooling="cls").extract(
        IMAGES)
    np.testing.assert_allclose(last.block("-1"), last.block("penultimate"), atol=1e-5)
    assert np.abs(last.block("blocks.3") - last.block("-1")).max() > 1e-2
    # Normalisation and blocks are in the cache keys.
    keys = [json.dumps(e.cache_configs_()["-1"], sort_keys=True) for e in (probe, probe_l2)]
    assert keys[0] != keys[1]


def test_timm_convnext_by_name_penultimate_stages_and_preprocessing(tmp_path):
    net = load_network("timm/convnext_atto", "random")
    assert (net.arch, net.head, net.feature_dim) == ("timm/convnext_atto", "head.fc", 320)
    # timm's recipe for these weights: resolve_data_config of the pretrained cfg.
    cfg = timm.data.resolve_data_config({}, model=net.module)
    assert net.preprocess == ImagePreprocess(224, 3, cfg["mean"], cfg["std"], resize=int(
        224 / cfg["crop_pct"]), interpolation=cfg["interpolation"])
    small = ImagePreprocess(32, 3, cfg["mean"], cfg["std"], resize=36, interpolation="bicubic")
    ext = _extractor("timm/convnext_atto", weights="random", layer=["stages.2", "penultimate"],
                     preprocess=small)
    out = ext.extract(IMAGES)
    assert ext.feature_blocks_ == {"stages.2": 160, "penultimate": 320}
    x = _model_input(ext, IMAGES)
    with torch.no_grad():
        head_input = net.module.forward_head(net.module.forward_features(x), pre_logits=True)
        stage2 = net.module.forward_intermediates(x, indices=[2], intermediates_only=True)[0]
    np.testing.assert_allclose(out.block("penultimate"), head_input.numpy(), atol=1e-5)
    np.testing.assert_allclose(out.block("stages.2"), stage2.mean(dim=(2, 3)).numpy(),
                               atol=1e-5)
    # The preprocessing is part of the key: timm's recipe and another one never share vectors.
    default = _extractor("timm/convnext_atto", weights="random")
    assert default.cache_config_()["preprocess"] != ext.cache_configs_()["penultimate"][
        "preprocess"]
    assert default.cache_config_()["preprocess"]["resize"] == 256  # crop_pct 0.875
    with pytest.raises(ValueError, match="no class token"):
        _extractor("timm/convnext_atto", weights="random", pooling="cls")
    with pytest.raises(ValueError, match="stages.2"):
        _extractor("timm/convnext_atto", weights="random", layer="stage.2")


def test_torchvision_vit_and_swin_pool_their_tokens():
    from torchvision.models import VisionTransformer
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=3).eval()
    exts = {p: _extractor(vit, pooling=p, preprocess=ImagePreprocess(32, 3))
            for p in ("avg", "cls", "mean")}
    x = _model_input(exts["cls"], IMAGES)
    captured = {}
    vit.encoder.register_forward_hook(lambda m, i, o: captured.__setitem__("tokens", o))
    with torch.no_grad():
        vit(x)
    tokens = captured["tokens"]  # (n, 1 + 16, 16) after the encoder's final norm
    np.testing.assert_allclose(exts["cls"].transform(IMAGES), tokens[:, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(exts["avg"].transform(IMAGES), tokens[:, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(exts["mean"].transform(IMAGES), tokens[:, 1:].mean(1).numpy(),
                               atol=1e-5)
    layers = _extractor(vit, layer=["-1", "encoder.layers.encoder_layer_0"], pooling="mean",
                        preprocess=ImagePreprocess(32, 3)).extract(IMAGES)
    np.testing.assert_allclose(layers.block("-1"), tokens[:, 1:].mean(1).numpy(), atol=1e-5)
    assert layers.block("encoder.layers.encoder_layer_0").shape == (5, 16)

    torch.manual_seed(0)
    swin = SwinTransformer([4, 4], 16, [1, 1], [2, 2], [2, 2], num_classes=3).eval()
    stage = {}
    swin.features[1].register_forward_hook(lambda m, i, o: stage.__setitem__("nhwc", o))
    ext = _extractor(swin, layer=["features.1", "-1", "penultimate"], pooling="mean",
                     preprocess=ImagePreprocess(32, 3))
    out = ext.extract(IMAGES)
    with torch.no_grad():
        swin(_model_input(ext, IMAGES))
    # Swin's maps are (n, H, W, C): the mean is over H and W, giving C = 16 values.
    assert ext.feature_blocks_["features.1"] == 16
    np.testing.assert_allclose(out.block("features.1"), stage["nhwc"].mean(dim=(1, 2)).numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(out.block("-1"), out.block("penultimate"), atol=1e-5)
    with pytest.raises(ValueError, match="no class token"):
        _extractor(swin, pooling="cls", preprocess=ImagePreprocess(32, 3))


def test_offline_pretrained_is_a_clear_error_and_a_cached_copy_is_used(tmp_path, monkeypatch):
    import huggingface_hub.constants
    from safetensors.torch import save_file

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(MissingWeightsError) as err:
        load_network("timm/convnext_atto")
    message = str(err.value)
    for words in ("timm/convnext_atto", "timm/convnext_atto.d2_in1k", "FEATCLF_OFFLINE=1",
                  "weights='FILE'", "Hugging Face directory", "weights='random'"):
        assert words in message
    # The same weights in the Hugging Face cache (as a download leaves them): used offline.
    random = load_network("timm/convnext_atto", "random", seed=3)
    snapshot = tmp_path / "hub" / "models--timm--convnext_atto.d2_in1k" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc")
    save_file(random.module.state_dict(), snapshot / "model.safetensors")
    cached = load_network("timm/convnext_atto")
    assert cached.weights.kind == "pretrained"
    assert "timm/convnext_atto.d2_in1k" in cached.weights.description
    assert cached.fingerprint == random.fingerprint


def test_weights_file_and_local_hugging_face_directory(tmp_path):
    random = load_network("timm/convnext_atto", "random", num_classes=4, seed=5)
    save_checkpoint(tmp_path / "w.safetensors", random.module.state_dict())
    from_file = load_network("timm/convnext_atto", tmp_path / "w.safetensors")
    assert from_file.fingerprint == random.fingerprint
    assert from_file.weights.kind == "file"
    # A local Hugging Face directory, as timm writes one; its config brings the recipe.
    random.module.pretrained_cfg = {**random.module.pretrained_cfg, "mean": (0.5,) * 3,
                                    "std": (0.25,) * 3, "crop_pct": 1.0}
    timm.models.save_for_hf(random.module, str(tmp_path / "hf"), safe_serialization=True)
    from_dir = load_network("timm/convnext_atto", tmp_path / "hf")
    assert from_dir.fingerprint == random.fingerprint
    assert (from_dir.preprocess.mean, from_dir.preprocess.std, from_dir.preprocess.resize) == (
        (0.5,) * 3, (0.25,) * 3, 224)
    with pytest.raises(ValueError, match="'convnext_atto' model, not 'timm/resnet18'"):
        load_network("timm/resnet18", tmp_path / "hf")


def test_softmax_classifier_fine_tunes_a_timm_backbone(tmp_path):
    from featclf.train import SoftmaxClassifier, recipe_for

    assert recipe_for("timm/convnext_atto")["optimizer"] == "adamw"
    X = np.concatenate([np.full((8, 32, 32, 3), 30, np.uint8), np.full((8, 32, 32, 3), 220,
                                                                     np.uint8)])
    X = np.clip(X + RNG.integers(-20, 20, X.shape), 0, 255).astype(np.uint8)
    y = np.repeat([0, 1], 8)
    clf = SoftmaxClassifier("timm/convnext_atto", weights="random",
                            preprocess=ImagePreprocess(32, 3), epochs=2, lr=1e-3, head_lr=1e-2,
                            validation_fraction=0, random_state=0, device="cpu").fit(X, y)
    assert clf.head_ == "head.fc" and clf.network_.arch == "timm/convnext_atto"
    assert clf.score(X, y) == 1.0  # two flat grey levels: a trained network separates them
    clf.save(tmp_path / "ft.pt")
    again = load_network(tmp_path / "ft.pt")
    assert again.arch == "timm/convnext_atto" and again.fingerprint == clf.network_.fingerprint
    logits = DeepFeatureExtractor(tmp_path / "ft.pt", layer="logits", device="cpu").fit()
    np.testing.assert_array_equal(logits.transform(X).argmax(1), clf.predict(X))


def test_models_cli_lists_timm_without_downloading(capsys):
    from featclf.cli import main

    assert main(["models", "--source", "timm", "--filter", "convnext_at*"]) == 0
    out = capsys.readouterr().out.splitlines()
    names = timm.list_models("convnext_at*")
    assert out[:-1] == [f"timm/{n}" for n in names]
    assert out[-1].startswith(f"... {len(names)} timm models")
    assert main(["models", "--layers", "timm/convnext_atto"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("penultimate  (the input of head.fc, 320 features")
    assert lines[1].startswith("-1 ... -4") and lines[2:] == [f"stages.{i}" for i in range(4)]


@pytest.mark.slow
def test_compare_runs_end_to_end_with_a_timm_backbone():
    from featclf.compare import compare
    from featclf.data import load_digits_images

    X, y = load_digits_images(return_X_y=True)
    keep = np.isin(y, [0, 1, 2])
    comparison = compare(
        (X[keep][:90], y[keep][:90]), models=["timm/convnext_atto"],
        classifiers=["logistic"], epochs=1, cv=2, c_grids=[1.0], n_resamples=100,
        train_options={"weights": "random", "preprocess": ImagePreprocess(32, 3),
                       "batch_size": 32}, device="cpu")
    results = comparison.results
    rows = results[results["selected"]].set_index("classifier")
    assert set(rows["model"]) == {"timm/convnext_atto"}
    assert {"softmax", "logistic"} <= set(rows.index)
    key = next(k for k in comparison.predictions if k.classifier == "logistic")
    accuracy = float(np.mean(comparison.predictions[key] == comparison.y_true))
    assert rows.loc["logistic", "accuracy"] == pytest.approx(accuracy)
    assert rows.loc["logistic", "n_features"] == 320  # convnext_atto's head input
    assert accuracy > 0.6  # three digit classes: far above chance (1/3) on real features
