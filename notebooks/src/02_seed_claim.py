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
# # The seed tutorial's claim, step by step
#
# The tutorial this project grew from (seed 000) trains a small Keras CNN on MNIST and then
# says: *keep the trained network minus its last layer, feed it the training images, and
# retrain a multiclass SVM on its outputs; the results are similar to the softmax
# layer's, depending on the SVM's parameters.*
#
# This notebook runs that experiment one step at a time:
#
# 1. train the seed's CNN (`seed_cnn`) with the seed's recipe,
# 2. cut off its softmax layer and extract 128-value features,
# 3. fit SVMs (and logistic regression) on the features, `C` chosen by cross-validation,
# 4. compare with the softmax head on the same 1,000 test digits: McNemar's test and
#    bootstrap confidence intervals (`featclf.stats`),
# 5. draw accuracy against `C`: the "depending on the SVM's parameters" part,
# 6. and finally run the whole experiment in one call, `featclf.compare.compare`.

# %% tags=["parameters"]
# Parameters. QUICK = True runs the same steps on fewer images and epochs in seconds (the
# test suite runs every notebook that way); the saved outputs come from QUICK = False.
QUICK = False
EPOCHS = 1 if QUICK else 10          # the seed's 10 epochs
N_IMAGES = 600 if QUICK else 5000    # all of MNIST-5k: 4,000 train / 1,000 test
PER_DECADE = 1 if QUICK else 2       # C values per factor of ten in the C grids
N_RESAMPLES = 200 if QUICK else 2000 # bootstrap resamples

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (6.4, 3.6), "axes.grid": True,
                     "grid.alpha": 0.3})
pd.set_option("display.precision", 4)

# %% [markdown]
# ## The data
#
# MNIST-5k, split 80/20 (stratified, seed 0): the split `featclf compare` and `make demo`
# use, so the numbers here can be checked against the report in
# `artifacts/reports/mnist5k/`.

# %%
from sklearn.utils import resample

from featclf.data import load_mnist5k
from featclf.model_selection import split_train_test

X, y = load_mnist5k(return_X_y=True)
if N_IMAGES < len(y):  # QUICK: a stratified sample
    X, y = resample(X, y, n_samples=N_IMAGES, replace=False, stratify=y, random_state=0)
X_train, X_test, y_train, y_test = split_train_test(X, y)
print(f"train {X_train.shape}, test {X_test.shape}; "
      f"test digits per class {np.bincount(y_test).tolist()}")

fig, axes = plt.subplots(2, 10, figsize=(8, 1.9))
for ax, image, label in zip(axes.flat, X_train, y_train):
    ax.imshow(image, cmap="gray_r")
    ax.set_title(label, fontsize=9)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 1. The seed's CNN and its recipe
#
# `seed_cnn` is the tutorial's Keras network: Conv 4@5x5 tanh, Conv 8@3x3 tanh, max-pool,
# Conv 16@3x3 relu, max-pool, Dense 128 tanh, Dense 10 softmax. `SoftmaxClassifier`'s
# defaults are its training recipe: SGD, learning rate 0.05 with Keras' decay 1e-6 per
# batch, Nesterov momentum 0.9, batches of 100, 10 epochs, shuffling, 20% of the training
# images held out to report validation accuracy.

# %%
from featclf import SoftmaxClassifier
from featclf.models import get_model

print(get_model("seed_cnn"))
recipe = SoftmaxClassifier("seed_cnn").get_params()
print({k: recipe[k] for k in ("optimizer", "lr", "lr_decay", "momentum", "nesterov",
                              "batch_size", "epochs", "validation_fraction")})

# %%
import time

started = time.perf_counter()
cnn = SoftmaxClassifier("seed_cnn", epochs=EPOCHS, random_state=0).fit(X_train, y_train)
print(f"trained in {time.perf_counter() - started:.0f} s")
history = cnn.history_
history

# %%
fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(8, 3))
loss_ax.plot(history["epoch"], history["train_loss"], "o-", label="train")
loss_ax.plot(history["epoch"], history["val_loss"], "o-", label="validation")
loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
acc_ax.plot(history["epoch"], history["train_accuracy"], "o-", label="train")
acc_ax.plot(history["epoch"], history["val_accuracy"], "o-", label="validation")
acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
acc_ax.legend()
fig.tight_layout()
plt.show()

softmax_pred = cnn.predict(X_test)
softmax_accuracy = (softmax_pred == y_test).mean()
print(f"softmax head, test accuracy: {softmax_accuracy:.3f}")

# %% [markdown]
# ## 2. Cut off the softmax layer
#
# `DeepFeatureExtractor(cnn)` is the trained network up to the input of its last layer:
# the 128 outputs of the Dense-128 tanh layer. The training images go through it once,
# the test images once.

# %%
from featclf import DeepFeatureExtractor

extractor = DeepFeatureExtractor(cnn).fit()
print(extractor.feature_model_)
started = time.perf_counter()
F_train, F_test = extractor.transform(X_train), extractor.transform(X_test)
seconds = time.perf_counter() - started
print(f"features: train {F_train.shape}, test {F_test.shape} "
      f"({(len(F_train) + len(F_test)) / seconds:.0f} images/s)")

# %% [markdown]
# ## 3. SVMs on the features, `C` chosen by cross-validation
#
# `featclf.pipelines` builds the classifiers (a `StandardScaler`, then the classifier; the
# grid parameter is always `clf__C`): a linear SVM (one-vs-rest `LinearSVC`), an RBF SVM
# (`SVC`), and multinomial logistic regression, which is a softmax layer retrained on
# fixed features. `C` is chosen by 3-fold cross-validation on the training features only;
# the test digits never influence it. The grids reach further down than featclf's default
# ones (`featclf.pipelines.c_grid`, from 1e-3) to show, in step 5, where the SVMs break
# down.

# %%
from sklearn.model_selection import GridSearchCV

from featclf.pipelines import make_classifier


def log_grid(low: int, high: int) -> list[float]:
    """C from 10**low to 10**high, PER_DECADE values per factor of ten."""
    return np.logspace(low, high, (high - low) * PER_DECADE + 1).round(10).tolist()


CLASSIFIERS = {"linear_svm": "linear SVM", "rbf_svm": "RBF SVM",
               "logistic": "logistic regression"}
C_GRIDS = {"linear_svm": log_grid(-5, 2), "rbf_svm": log_grid(-2, 3),
           "logistic": log_grid(-5, 2)}
searches = {}
for name in CLASSIFIERS:
    searches[name] = GridSearchCV(make_classifier(name), {"clf__C": C_GRIDS[name]}, cv=3)
    searches[name].fit(F_train, y_train)

predictions = {"softmax": softmax_pred}
predictions.update({name: s.predict(F_test) for name, s in searches.items()})
table = pd.DataFrame({
    "classifier": ["softmax head", *CLASSIFIERS.values()],
    "C (chosen by CV)": [np.nan, *(s.best_params_["clf__C"] for s in searches.values())],
    "test accuracy": [(p == y_test).mean() for p in predictions.values()],
})
table

# %% [markdown]
# ## 4. Is the difference real? McNemar's test and bootstrap intervals
#
# All classifiers predict the same 1,000 test digits, so they are compared *paired*:
#
# * **McNemar's test** looks only at the digits the two classifiers disagree on: `b`
#   (softmax right, SVM wrong) and `c` (softmax wrong, SVM right). If both were equally
#   good, each disagreement would be a fair coin flip.
# * **Bootstrap intervals**: resample the test digits with replacement, recompute the
#   accuracy (or the paired difference of accuracies), take the 2.5% and 97.5% quantiles.

# %%
from featclf.stats import bootstrap_accuracy_ci, bootstrap_accuracy_diff, mcnemar

rows = []
for name, label in {"softmax": "softmax head", **CLASSIFIERS}.items():
    pred = predictions[name]
    ci = bootstrap_accuracy_ci(y_test, pred, n_resamples=N_RESAMPLES, random_state=0)
    row = {"classifier": label, "accuracy": ci.estimate,
           "95% CI": f"[{ci.ci_low:.3f}, {ci.ci_high:.3f}]"}
    if name != "softmax":
        diff = bootstrap_accuracy_diff(y_test, pred, softmax_pred,
                                       n_resamples=N_RESAMPLES, random_state=0)
        test = mcnemar(y_test, softmax_pred, pred)
        row.update({"minus softmax": diff.diff,
                    "diff 95% CI": f"[{diff.ci_low:+.3f}, {diff.ci_high:+.3f}]",
                    "b (only softmax right)": test.b, "c (only this right)": test.c,
                    "McNemar p": test.pvalue})
    rows.append(row)
stats_table = pd.DataFrame(rows).set_index("classifier")
stats_table.astype({"b (only softmax right)": "Int64", "c (only this right)": "Int64"})

# %%
best = max(CLASSIFIERS, key=lambda name: (predictions[name] == y_test).mean())
test = mcnemar(y_test, softmax_pred, predictions[best])
diff = bootstrap_accuracy_diff(y_test, predictions[best], softmax_pred,
                               n_resamples=N_RESAMPLES, random_state=0)
verdict = "no significant difference" if test.pvalue >= 0.05 else "a significant difference"
print(f"Best classifier on the features: {CLASSIFIERS[best]}, accuracy "
      f"{(predictions[best] == y_test).mean():.3f} vs {softmax_accuracy:.3f} for the "
      f"softmax head: difference {diff.diff:+.3f} (95% CI [{diff.ci_low:+.3f}, "
      f"{diff.ci_high:+.3f}]), McNemar p = {test.pvalue:.3g} -> {verdict} at the 5% level.")

# %% [markdown]
# Choosing the best of three classifiers by their test accuracy flatters the winner a
# little (the rows of the table above, one test each, do not have that problem).
#
# The digits the two disagree on (top: the softmax head is right and the best classifier on
# the features is wrong; bottom: the other way round), with the wrong answer in red:

# %%
only_softmax = np.flatnonzero((softmax_pred == y_test) & (predictions[best] != y_test))
only_best = np.flatnonzero((softmax_pred != y_test) & (predictions[best] == y_test))
fig, axes = plt.subplots(2, 10, figsize=(8, 2.2))
for row, (indices, wrong) in enumerate([(only_softmax, predictions[best]),
                                       (only_best, softmax_pred)]):
    for ax in axes[row]:
        ax.axis("off")
    for ax, i in zip(axes[row], indices[:10]):
        ax.imshow(X_test[i], cmap="gray_r")
        ax.set_title(f"{y_test[i]} / {wrong[i]}", fontsize=8, color="tab:red")
axes[0, 0].text(-0.3, 0.5, f"{best}\nwrong", transform=axes[0, 0].transAxes,
                ha="right", va="center", fontsize=8)
axes[1, 0].text(-0.3, 0.5, "softmax\nwrong", transform=axes[1, 0].transAxes, ha="right",
                va="center", fontsize=8)
plt.show()
print(f"{len(only_softmax)} digits only the softmax head gets right, {len(only_best)} "
      f"only the {CLASSIFIERS[best]} gets right (true / wrong label above each)")

# %% [markdown]
# ## 5. "Depending on the SVM's parameters": accuracy against `C`
#
# Every `C` of each grid, refitted on all training features and scored on the test digits
# (solid), next to its cross-validation accuracy on the training features (dotted; higher,
# because the network was trained on those very images). `C` trades the margin against
# training errors: small values regularise strongly, large ones fit the training features
# closely. Whether an SVM ends up above or below the softmax head depends on it.

# %%
from matplotlib.lines import Line2D
from sklearn.base import clone

curves = {}
for name, search in searches.items():
    Cs = search.cv_results_["param_clf__C"].astype(float)
    test_accuracy = [clone(search.estimator).set_params(clf__C=C).fit(F_train, y_train)
                     .score(F_test, y_test) for C in Cs]
    curves[name] = pd.DataFrame({"C": Cs, "test": test_accuracy,
                                 "cv": search.cv_results_["mean_test_score"]})

colors = {"linear_svm": "tab:blue", "rbf_svm": "tab:green", "logistic": "tab:purple"}
fig, ax = plt.subplots(figsize=(7.5, 4))
for name, curve in curves.items():
    ax.plot(curve["C"], curve["test"], "o-", ms=4, color=colors[name],
            label=CLASSIFIERS[name])
    ax.plot(curve["C"], curve["cv"], ":", color=colors[name])
    ax.plot([searches[name].best_params_["clf__C"]],
            [(predictions[name] == y_test).mean()], "*", color=colors[name], ms=13,
            mec="black")
ax.axhline(softmax_accuracy, color="black", ls="--", label="softmax head")
ax.set(xscale="log", xlabel="C (inverse regularisation)", ylabel="accuracy",
       title="seed_cnn features: accuracy vs C (star: C chosen by CV)")
handles = ax.get_legend_handles_labels()[0] + [
    Line2D([], [], color="gray", ls="-", label="test digits"),
    Line2D([], [], color="gray", ls=":", label="3-fold CV,\ntraining digits")]
ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
plt.show()

for name, curve in curves.items():
    low, high = curve.loc[curve["test"].idxmin()], curve.loc[curve["test"].idxmax()]
    print(f"{CLASSIFIERS[name]:>19}: test accuracy {low.test:.3f} at C={low.C:.3g} to "
          f"{high.test:.3f} at C={high.C:.3g} (softmax head {softmax_accuracy:.3f})")

# %% [markdown]
# ## 6. The same experiment in one call
#
# `featclf.compare.compare` runs all of the above on identical splits: trains the network,
# extracts, sweeps `C` (featclf's default grids), and computes every statistic.
# It returns a `Comparison` (the results table, every test prediction, the training
# histories, the setup), which `featclf.report.write_report` turns into Markdown/HTML with
# plots; `featclf compare` (and `make demo`) does both from the shell.
#
# One difference matters. Above, the network followed the seed's recipe to the letter and
# held 20% of the training digits out for validation, so it learned from 80% of them while
# the SVMs were fitted on the features of all of them: part of the SVMs' edge was those
# extra labelled digits. `compare` trains the network with `validation_fraction=0`, so
# that the softmax head and the SVMs learn from exactly the same digits.

# %%
from featclf.compare import compare
from featclf.report import summary_table, verdict

comparison = compare((X, y), models=["seed_cnn"], classifiers=list(CLASSIFIERS),
                     epochs=EPOCHS, n_resamples=N_RESAMPLES, dataset="mnist5k",
                     random_state=0)
columns = ["classifier", "C", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
           "diff_vs_softmax", "diff_ci_low", "diff_ci_high", "mcnemar_p"]
summary_table(comparison)[columns]

# %%
print(verdict(comparison))
full = comparison.results.query("classifier == 'softmax'")["accuracy"].iloc[0]
print(f"\nThe softmax head learned from {round(0.8 * len(X_train))} training digits in "
      f"steps 1-5 (test accuracy {softmax_accuracy:.3f}) and from all {len(X_train)} "
      f"here ({full:.3f}).")
