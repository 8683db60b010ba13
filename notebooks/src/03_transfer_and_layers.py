# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
#   # As in any notebook, a cell imports what it first needs and shows its last value:
#   # ruff: noqa: E402, B018
# ---

# %% [markdown]
# # Transfer and layers
#
# Two questions about where the features come from:
#
# 1. **Transfer.** Can a CNN trained on one data set serve, frozen, as the feature extractor
#    for another? LeNet-5 trained on MNIST-5k (`artifacts/models/lenet5-mnist5k.pt`) meets
#    scikit-learn's 8x8 digits (`load_digits_images`, 1,797 images), which its
#    preprocessing resizes to 28x28. A linear SVM on its features is compared with the
#    same network trained from scratch on the 8x8 digits, also as the number of training
#    images shrinks.
# 2. **Layers.** Which layer of the trained LeNet-5 gives the best features for a linear
#    SVM, and how should convolutional maps be turned into vectors (`pooling="avg"` or
#    `"flatten"`)? A random-weight LeNet-5 shows what training adds.

# %% tags=["parameters"]
# Parameters. QUICK = True runs the same steps on fewer images and epochs in seconds (the
# test suite runs every notebook that way); the saved outputs come from QUICK = False.
QUICK = False
N_DIGITS = 400 if QUICK else 1797         # all of scikit-learn's 8x8 digits
EPOCHS = 2 if QUICK else 15               # from-scratch training (LeNet-5's recipe: 15)
TRAIN_SIZES = [50] if QUICK else [30, 100, 300]   # smaller training sets (learning curve)
N_MNIST = 500 if QUICK else 5000          # images of MNIST-5k for the layer sweep
SWEEP_C = [0.01] if QUICK else [0.001, 0.01, 0.1]   # C values of the layer sweep

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (6.4, 3.6), "axes.grid": True,
                     "grid.alpha": 0.3})
pd.set_option("display.precision", 4)

# %%
from pathlib import Path

from featclf import DeepFeatureExtractor, SoftmaxClassifier
from featclf.data import load_digits_images, load_mnist5k
from featclf.model_selection import split_train_test

# The committed checkpoint, found from the notebook's folder or the repository root.
ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "artifacts").is_dir())
CHECKPOINT = ROOT / "artifacts" / "models" / "lenet5-mnist5k.pt"
mnist_net = SoftmaxClassifier.load(CHECKPOINT)
print(f"{CHECKPOINT.name}: {mnist_net.model_name_}, trained on MNIST-5k for "
      f"{mnist_net.n_epochs_} epochs, classes {mnist_net.classes_.tolist()}")

# %% [markdown]
# ## Part 1: an MNIST-trained CNN as a frozen extractor for 8x8 digits
#
# The 8x8 digits are a different data set: another resolution, 17 grey levels, other
# writers. The checkpoint carries LeNet-5's preprocessing (28x28, one channel, MNIST's mean
# and std), so by default the extractor stretches each 8x8 image to 28x28, the digit
# filling the whole frame. MNIST's digits, though, are 20x20 pixels centred in a 28x28
# frame. `preprocess=` takes any callable on `(N, C, H, W)` tensors, so a few lines can
# frame the 8x8 digits the way MNIST does:

# %%
import torch
import torch.nn.functional as F
from sklearn.utils import resample


class MnistFraming:
    """Frame digits as MNIST does: 20x20, centred in 28x28, MNIST's mean and std."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        x = F.interpolate(x, size=(20, 20), mode="bilinear", antialias=True)
        x = F.pad(x, (4, 4, 4, 4))                   # 4 blank pixels on every side
        return (x - 0.1307) / 0.3081

    def __repr__(self) -> str:                        # feature stores key vectors by it
        return "MnistFraming()"


Xd, yd = load_digits_images(return_X_y=True)
X_mnist, y_mnist = load_mnist5k(return_X_y=True)
if QUICK:  # stratified samples
    Xd, yd = resample(Xd, yd, n_samples=N_DIGITS, replace=False, stratify=yd,
                      random_state=0)
    X_mnist, y_mnist = resample(X_mnist, y_mnist, n_samples=N_MNIST, replace=False,
                                stratify=y_mnist, random_state=0)
Xd_train, Xd_test, yd_train, yd_test = split_train_test(Xd, yd)
print(f"8x8 digits: train {Xd_train.shape}, test {Xd_test.shape}, {Xd.dtype}")

PREPROCESS = {"resized": mnist_net.preprocess_, "framed": MnistFraming()}
shown = torch.as_tensor(Xd[:6])[:, None]
rows = [("8x8", Xd[:6]), *((name, pre(shown)[:, 0]) for name, pre in PREPROCESS.items()),
        ("MNIST", [X_mnist[list(y_mnist).index(label)] for label in yd[:6]])]
fig, axes = plt.subplots(4, 6, figsize=(5.4, 3.9))
for row, (title, images) in zip(axes, rows):
    for ax, image in zip(row, images):
        ax.imshow(image, cmap="gray_r")
        ax.set_xticks([]), ax.set_yticks([])
    row[0].set_ylabel(title, fontsize=8)
plt.show()

# %% [markdown]
# Ways to classify the 8x8 digits, all scored on the same 20% of test digits:
#
# * **frozen MNIST features + linear SVM**: the checkpoint without its head, with either
#   preprocessing, `C` by 3-fold cross-validation on the training digits' features;
# * **softmax from scratch**: the same architecture trained end to end on the 8x8 digits
#   (LeNet-5's recipe: 15 epochs, SGD with Nesterov momentum, lr 0.05);
# * **the MNIST softmax head as it is**, with no training on the 8x8 digits at all
#   (both data sets have the classes 0-9).

# %%
import time

from sklearn.model_selection import GridSearchCV

from featclf.pipelines import c_grid, make_svm

features, svms, pred = {}, {}, {}
for name, pre in PREPROCESS.items():
    frozen = DeepFeatureExtractor(CHECKPOINT, preprocess=pre).fit()
    features[name] = frozen.transform(Xd_train), frozen.transform(Xd_test)
    svms[name] = GridSearchCV(make_svm("linear"), {"clf__C": c_grid("linear")}, cv=3)
    svms[name].fit(features[name][0], yd_train)
    pred[f"frozen MNIST features ({name}) + linear SVM"] = svms[name].predict(
        features[name][1])

started = time.perf_counter()
scratch = SoftmaxClassifier("lenet5", epochs=EPOCHS, validation_fraction=0.0,
                            random_state=0).fit(Xd_train, yd_train)
print(f"softmax from scratch trained in {time.perf_counter() - started:.0f} s")
pred["softmax from scratch"] = scratch.predict(Xd_test)
for name, pre in PREPROCESS.items():
    head = SoftmaxClassifier.load(CHECKPOINT, preprocess=pre)
    pred[f"MNIST softmax head ({name}), no training"] = head.predict(Xd_test)

# %%
from IPython.display import display

from featclf.stats import bootstrap_accuracy_ci, bootstrap_accuracy_diff, mcnemar

rows = []
for name, p in pred.items():
    ci = bootstrap_accuracy_ci(yd_test, p, random_state=0)
    rows.append({"classifier": name, "test accuracy": ci.estimate,
                 "95% CI": f"[{ci.ci_low:.3f}, {ci.ci_high:.3f}]"})
display(pd.DataFrame(rows).set_index("classifier"))

baseline = pred["softmax from scratch"]
for name in PREPROCESS:
    transfer = pred[f"frozen MNIST features ({name}) + linear SVM"]
    test = mcnemar(yd_test, baseline, transfer)
    diff = bootstrap_accuracy_diff(yd_test, transfer, baseline, random_state=0)
    print(f"frozen features ({name}) + SVM minus softmax from scratch: {diff.diff:+.3f} "
          f"(95% CI [{diff.ci_low:+.3f}, {diff.ci_high:+.3f}]); McNemar b={test.b}, "
          f"c={test.c}, p={test.pvalue:.3g}")

# %% [markdown]
# ### With fewer labelled images
#
# Frozen features need labels only for the SVM; training from scratch needs them for the
# whole network. Below, both learn from stratified subsets of the training digits. The
# from-scratch network gets the same number of optimizer steps at every size (as many as
# its full run above: more epochs on fewer images), so that small sets are not also
# under-trained.

# %%
import math

from sklearn.model_selection import train_test_split

steps = EPOCHS * math.ceil(len(Xd_train) / 100)       # optimizer steps of the full run
curve = []
for n in [*TRAIN_SIZES, len(Xd_train)]:
    if n < len(Xd_train):
        idx, _ = train_test_split(np.arange(len(Xd_train)), train_size=n,
                                  stratify=yd_train, random_state=0)
    else:
        idx = np.arange(n)
    point = {"training digits": n}
    for name, (F_train, F_test) in features.items():
        small = svms[name] if n == len(Xd_train) else GridSearchCV(
            make_svm("linear"), {"clf__C": c_grid("linear")},
            cv=min(3, np.bincount(yd_train[idx]).min())).fit(F_train[idx], yd_train[idx])
        point[f"frozen ({name}) + SVM"] = small.score(F_test, yd_test)
    epochs = math.ceil(steps / math.ceil(n / 100))
    net = scratch if n == len(Xd_train) else SoftmaxClassifier(
        "lenet5", epochs=epochs, validation_fraction=0.0, random_state=0,
    ).fit(Xd_train[idx], yd_train[idx])
    point.update({"softmax from scratch": net.score(Xd_test, yd_test),
                  "epochs from scratch": epochs})
    curve.append(point)
curve = pd.DataFrame(curve).set_index("training digits")
display(curve)

fig, ax = plt.subplots()
for column, style in [("frozen (framed) + SVM", "o-"), ("frozen (resized) + SVM", "o--"),
                      ("softmax from scratch", "s-")]:
    ax.plot(curve.index, curve[column], style, label=column)
ax.axhline((pred["MNIST softmax head (framed), no training"] == yd_test).mean(),
           color="gray", ls=":", label="MNIST softmax head (framed), no training")
ax.set(xscale="log", xlabel="labelled training digits (8x8)", ylabel="test accuracy",
       title="Transfer from MNIST to 8x8 digits")
ax.legend(loc="lower right", fontsize=8)
plt.show()

# %% [markdown]
# `featclf compare --data digits --weights artifacts/models/lenet5-mnist5k.pt --out DIR`
# runs the transfer experiment as a report, with a third baseline: the MNIST network
# fine-tuned end to end on the 8x8 digits.
#
# ## Part 2: which layer?
#
# LeNet-5's layers carry the tutorial's names: `c1` (6 maps of 28x28), `s2` (pooling),
# `c3` (16 maps of 10x10), `s4` (16 maps of 5x5), `c5` (120 maps of 1x1), `f6` (84 values)
# and the output layer. `layer=` picks any of them (any graph node:
# `featclf.models.layer_names`), `pooling=` turns maps into vectors: `"avg"` keeps one mean
# per map (`d = C`), `"flatten"` keeps every value (`d = C*H*W`). The default, `layer=None`,
# is the input of the final layer: for LeNet-5, `f6`'s output.
#
# Features of MNIST-5k's 4,000 training and 1,000 test digits (the split the checkpoint
# was trained on, so the test digits are unseen), from the trained checkpoint and from a
# LeNet-5 with random weights; then a linear SVM per layer. Left out because they would
# repeat a row: `s4` averaged (`s4` averages 2x2 blocks of `c3`, so its means are `c3`'s)
# and `c5` flattened (its maps are 1x1).

# %%
from featclf.models import get_model, layer_names

print(layer_names(get_model("lenet5")))
Xm_train, Xm_test, ym_train, ym_test = split_train_test(X_mnist, y_mnist)

f6 = DeepFeatureExtractor(CHECKPOINT, layer="f6").fit().transform(Xm_test)
penultimate = DeepFeatureExtractor(CHECKPOINT).fit().transform(Xm_test)
print(f"layer='f6' and layer=None give the same vectors: {np.array_equal(f6, penultimate)}")

# %%
from sklearn.base import clone

SWEEP = [("c3", "avg"), ("c3", "flatten"), ("s4", "flatten"), ("c5", "avg"),
         ("f6", "avg")]
NETWORKS = {"trained on MNIST": (CHECKPOINT, None), "random weights": ("lenet5", "random")}
# C by 3-fold CV on 1,000 of the training digits, then refitted on all of them: a
# linear SVM on c3's 1,600 flattened values takes half a minute per fit.
cv_part = np.arange(min(1000, len(Xm_train)))
sweep = []
for network, (model, weights) in NETWORKS.items():
    for layer, pooling in SWEEP:
        ext = DeepFeatureExtractor(model, weights, layer=layer, pooling=pooling).fit()
        A, B = ext.transform(Xm_train), ext.transform(Xm_test)
        search = GridSearchCV(make_svm("linear"), {"clf__C": SWEEP_C}, cv=3)
        search.fit(A[cv_part], ym_train[cv_part])
        svm = clone(search.best_estimator_).fit(A, ym_train)
        sweep.append({"network": network, "layer": layer, "pooling": pooling,
                      "d": A.shape[1], "C": search.best_params_["clf__C"],
                      "test accuracy": svm.score(B, ym_test)})
sweep = pd.DataFrame(sweep)
sweep.pivot_table(index=["layer", "pooling", "d"], columns="network",
                  values=["test accuracy", "C"], sort=False)

# %%
trained = sweep[sweep["network"] == "trained on MNIST"]
labels = [f"{r.layer}\n{r.pooling}, d={r.d}" for r in trained.itertuples()]
labels = [text.replace("f6", "f6 = penultimate") for text in labels]
x = np.arange(len(labels))
fig, ax = plt.subplots(figsize=(8, 3.8))
for k, (network, color) in enumerate([("trained on MNIST", "tab:blue"),
                                      ("random weights", "tab:gray")]):
    values = sweep.loc[sweep["network"] == network, "test accuracy"].to_numpy()
    bars = ax.bar(x + (k - 0.5) * 0.38, values, 0.38, color=color, label=network)
    ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
ax.set_xticks(x, labels, fontsize=8)
ax.set(ylabel="test accuracy (linear SVM)", ylim=(0.5, 1.02),
       title="LeNet-5 layers as features for MNIST-5k")
ax.legend(loc="lower left")
plt.show()

# %% [markdown]
# The same sweep from the shell, as a report with confusion matrices and C curves:
# `featclf compare --model lenet5 --layer c5 --layer f6 --out DIR` (see
# `artifacts/reports/layers-lenet5/`).
