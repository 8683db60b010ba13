"""Augmented views in the feature store: seeded per image, keyed per view, reused on reruns.

References: the extractor's own clean features of images the test augments itself (the seed
preset drawn from the view's seed, or a deterministic flip), and the store's own counts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from imagefile_helpers import write_image
from sklearn.model_selection import StratifiedGroupKFold
from torch import nn
from torchvision.transforms import v2

from featclf.data import load_mnist5k
from featclf.data.inputs import as_image_source
from featclf.data.transforms import seed_augmentation
from featclf.extract import DeepFeatureExtractor
from featclf.extract.views import (
    describe_augmentation,
    extract_views,
    tta_features,
    view_seed,
)

FLIP = v2.RandomHorizontalFlip(p=1.0)  # deterministic: every view is the mirror image


@pytest.fixture(scope="module")
def digits():
    """Twelve MNIST digits (uint8, 28x28) and their labels."""
    X, y = load_mnist5k(return_X_y=True)
    return X[::400][:12].copy(), y[::400][:12].copy()


class _MustNotRun(nn.Module):
    def forward(self, x):
        raise AssertionError("the network ran although every view was in the store")


def test_each_view_is_the_seed_preset_drawn_from_its_own_seed(digits):
    X, _ = digits
    ext = DeepFeatureExtractor("lenet5", "random", batch_size=8).fit()
    torch.manual_seed(123)
    out = extract_views(ext, X, augment="seed", n_views=3, random_state=5)
    after = torch.rand(4)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(4))  # the caller's random state is left alone
    assert out.features.shape == (12, 3, 84) and out.indices.tolist() == list(range(12))
    digests = as_image_source(X).digests()
    aug = seed_augmentation()
    by_hand = np.empty((12, 3, 1, 28, 28), np.float32)
    for j in range(12):
        for i in range(3):
            torch.manual_seed(view_seed(5, digests[j], i))
            by_hand[j, i] = aug(torch.from_numpy(X[j][None]).float() / 255).numpy()
    expected = ext.transform(by_hand.reshape(36, 1, 28, 28)).reshape(12, 3, 84)
    np.testing.assert_allclose(out.features, expected, rtol=1e-5, atol=1e-6)
    # Real augmentation: views differ from each other and from the clean image's features.
    clean = ext.transform(X)
    assert np.abs(out.features[:, 0] - out.features[:, 1]).max() > 1e-2
    assert np.abs(out.features[:, 0] - clean).max() > 1e-2


def test_views_do_not_depend_on_batch_size_or_order(digits):
    X, _ = digits
    small = DeepFeatureExtractor("lenet5", "random", batch_size=2).fit()
    large = DeepFeatureExtractor("lenet5", "random", batch_size=64).fit()
    a = extract_views(small, X, n_views=2).features
    order = np.random.default_rng(0).permutation(12)
    b = extract_views(large, X[order], n_views=2).features
    np.testing.assert_allclose(b, a[order], rtol=1e-5, atol=1e-6)


def test_a_rerun_reads_every_view_and_the_network_never_runs(tmp_path, digits):
    X, _ = digits
    store = tmp_path / "store"
    first = extract_views(DeepFeatureExtractor("lenet5", "random", store=store).fit(), X,
                          n_views=4)
    assert (first.n_computed, first.n_reused) == (48, 0)
    ext = DeepFeatureExtractor("lenet5", "random", store=store).fit()
    ext.runner_.module = _MustNotRun()
    again = extract_views(ext, X, n_views=4)
    assert (again.n_computed, again.n_reused) == (0, 48)
    np.testing.assert_array_equal(again.features, first.features)
    assert again.description == describe_augmentation("seed") == first.description
    # The clean features are a key of their own: not served by the views.
    clean = DeepFeatureExtractor("lenet5", "random", store=store).fit().extract(X)
    assert clean.n_computed == 12


def test_changing_augmentation_seed_or_views_changes_the_keys(tmp_path, digits):
    X, _ = digits
    ext = DeepFeatureExtractor("lenet5", "random", store=tmp_path / "store").fit()
    base = extract_views(ext, X, n_views=2)
    other_seed = extract_views(ext, X, n_views=2, random_state=1)
    assert other_seed.n_computed == 24
    assert np.abs(other_seed.features - base.features).max() > 1e-2
    milder = extract_views(ext, X, augment=seed_augmentation(degrees=5.0), n_views=2)
    assert milder.n_computed == 24 and milder.description != base.description
    assert np.abs(milder.features - base.features).max() > 1e-2
    more = extract_views(ext, X, n_views=3)
    assert more.n_computed == 36  # a third view: new keys (views 0 and 1 recomputed with it)
    np.testing.assert_allclose(more.features[:, :2], base.features, rtol=1e-5, atol=1e-6)
    again = extract_views(ext, X, n_views=3)
    assert (again.n_computed, again.n_reused) == (0, 36)


def test_a_v2_transform_and_several_layers(digits):
    X, _ = digits
    ext = DeepFeatureExtractor("lenet5", "random", layer=["c5", "penultimate", "logits"]).fit()
    out = extract_views(ext, X, augment=FLIP, n_views=2)
    mirrored = ext.transform(np.ascontiguousarray(X[:, :, ::-1]))
    assert out.features.shape == (12, 2, 120 + 84 + 10)
    for view in range(2):
        np.testing.assert_allclose(out.features[:, view], mirrored, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.block("logits")[:, 0], mirrored[:, 204:], rtol=1e-5,
                               atol=1e-6)
    assert out.description == "RandomHorizontalFlip(p=1.0)"


def test_views_of_image_files_with_an_unreadable_one(tmp_path, digits):
    X, _ = digits
    paths = [str(write_image(tmp_path / f"d{i}.png", X[i])) for i in range(5)]
    (tmp_path / "broken.png").write_bytes(b"not a png")
    paths.insert(2, str(tmp_path / "broken.png"))
    ext = DeepFeatureExtractor("lenet5", "random", on_error="skip",
                               store=tmp_path / "store").fit()
    out = extract_views(ext, paths, n_views=2)
    assert out.indices.tolist() == [0, 1, 3, 4, 5]
    assert [e.source for e in out.errors] == [paths[2]]
    assert out.n_computed == 10
    # The same pixels as arrays, seeded by the files' digests, give the same views.
    digests = as_image_source(paths).digests()
    aug = seed_augmentation()
    by_hand = []
    for j, i in enumerate([0, 1, 3, 4, 5]):
        for view in range(2):
            torch.manual_seed(view_seed(0, digests[i], view))
            by_hand.append(aug(torch.from_numpy(X[j][None]).float() / 255).numpy())
    expected = ext.transform(np.stack(by_hand)).reshape(5, 2, 84)
    np.testing.assert_allclose(out.features, expected, rtol=1e-5, atol=1e-6)
    again = extract_views(ext, paths, n_views=2)
    assert (again.n_computed, again.n_reused) == (0, 10)


def test_training_rows_keep_labels_and_group_views_by_image(digits):
    X, y = digits
    ext = DeepFeatureExtractor("lenet5", "random").fit()
    out = extract_views(ext, X, n_views=3)
    rows, labels, groups = out.training_rows(y)
    assert rows.shape == (36, 84)
    np.testing.assert_array_equal(rows[3 * 4 + 2], out.features[4, 2])
    np.testing.assert_array_equal(labels, np.repeat(y, 3))
    folds = StratifiedGroupKFold(n_splits=3).split(rows, labels, groups)
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])


def test_tta_features_average_the_clean_image_and_its_views(digits):
    X, _ = digits
    ext = DeepFeatureExtractor("lenet5", "random").fit()
    clean = ext.transform(X)
    mirrored = ext.transform(np.ascontiguousarray(X[:, :, ::-1]))
    np.testing.assert_allclose(tta_features(ext, X, augment=FLIP, n_views=3),
                               (clean + 3 * mirrored) / 4, rtol=1e-5, atol=1e-6)
    views = extract_views(ext, X, n_views=4)
    np.testing.assert_allclose(tta_features(ext, X, n_views=4, include_clean=False),
                               views.features.mean(axis=1), rtol=1e-6, atol=1e-7)


def test_augmentations_without_a_stable_description_are_refused(digits):
    X, _ = digits
    ext = DeepFeatureExtractor("lenet5", "random").fit()
    for bad in (lambda x: x.flip(-1), v2.Lambda(lambda x: x),
                v2.Compose([v2.RandomRotation(5), v2.Lambda(torch.flipud)])):
        with pytest.raises(ValueError, match="no stable description.*augment='seed'.*v2 "
                                             "transform"):
            extract_views(ext, X, augment=bad, n_views=2)
    with pytest.raises(ValueError, match="n_views"):
        extract_views(ext, X, n_views=0)
    with pytest.raises(ValueError, match="augment"):
        extract_views(ext, X, augment="strong", n_views=2)

