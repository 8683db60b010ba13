"""Build the example notebooks in ``notebooks/`` from their cell sources, run them, save them.

The notebooks are written from the cell sources in this file (the one place to edit them), run
top to bottom with the current interpreter's Jupyter kernel, and saved with their outputs so that
GitHub shows the figures and numbers of a real run::

    python tools/build_notebooks.py                  # all four, full settings (a few min each)
    python tools/build_notebooks.py 03_transfer_and_layers
    python tools/build_notebooks.py --quick --out /tmp/nb   # QUICK = True, e.g. to try an edit

Every notebook's first code cell is tagged ``parameters`` and sets ``QUICK = False``; with
``QUICK = True`` (:func:`set_quick`) the same steps run on a few images in seconds, which is
how ``tests/test_notebooks.py`` executes them.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
KERNEL_NAME = "python3"
PARAMETERS_TAG = "parameters"
_QUICK_LINE = re.compile(r"^QUICK = False\b", flags=re.MULTILINE)


def md(source: str) -> nbformat.NotebookNode:
    """A Markdown cell (``source`` dedented and stripped)."""
    return nbformat.v4.new_markdown_cell(textwrap.dedent(source).strip("\n"))


def code(source: str, *, tags: tuple[str, ...] = ()) -> nbformat.NotebookNode:
    """A code cell (``source`` dedented and stripped), with cell tags."""
    cell = nbformat.v4.new_code_cell(textwrap.dedent(source).strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


# Shared by every notebook, right after the parameters: small PNG figures, short tables.
SETUP = """
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (6.4, 3.6), "axes.grid": True,
                     "grid.alpha": 0.3})
pd.set_option("display.precision", 4)
"""


# --------------------------------------------------------------------------------------------
# 01: the extractor in a Pipeline, GridSearchCV over C, set_output(transform="pandas")
# --------------------------------------------------------------------------------------------

def quickstart() -> list[nbformat.NotebookNode]:
    """Cells of ``01_quickstart``."""
    return [
        md("""
        # Quickstart: a CNN without its softmax head, inside scikit-learn

        `DeepFeatureExtractor` is a scikit-learn transformer: images in, one float32 feature
        vector per image out, computed by a trained CNN whose final classification layer has been
        cut off. Everything after it is plain scikit-learn. This notebook

        1. trains LeNet-5 end to end on MNIST-5k (`SoftmaxClassifier`, the softmax baseline),
        2. puts the same network, headless, first in a `Pipeline` with a linear SVM,
        3. tunes the SVM's `C` with `GridSearchCV`, with a feature store so that each image goes
           through the network once however many fits the search runs,
        4. uses `set_output(transform="pandas")` to get named feature columns.
        """),
        code("""
        # Parameters. QUICK = True runs the same steps on fewer images and epochs in seconds (the
        # test suite runs every notebook that way); the saved outputs come from QUICK = False.
        QUICK = False
        EPOCHS = 1 if QUICK else 10                   # SoftmaxClassifier's default recipe: 10
        N_TRAIN = 600 if QUICK else 4000              # MNIST-5k's training split has 4,000
        N_TEST = 300 if QUICK else 1000               # ... and its test split 1,000
        C_GRID = [0.01, 1.0] if QUICK else [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]
        """, tags=(PARAMETERS_TAG,)),
        code(SETUP),
        md("""
        ## The data: MNIST-5k

        5,000 real MNIST digits ship with featclf (`uint8`, `(n, 28, 28)`). `split_train_test` is
        the stratified, seeded 80/20 split every featclf experiment uses.
        """),
        code("""
        from featclf import DeepFeatureExtractor, SoftmaxClassifier
        from featclf.data import load_mnist5k
        from featclf.train import split_train_test

        X, y = load_mnist5k(return_X_y=True)
        X_train, X_test, y_train, y_test = split_train_test(X, y)
        X_train, y_train = X_train[:N_TRAIN], y_train[:N_TRAIN]
        X_test, y_test = X_test[:N_TEST], y_test[:N_TEST]
        print(f"train {X_train.shape} {X_train.dtype}, test {X_test.shape}")
        """),
        md("""
        ## 1. The CNN, trained end to end

        `SoftmaxClassifier` is the network trained the usual way, as a scikit-learn classifier
        (`fit`, `predict`, `predict_proba`, `score`, and the per-epoch `history_`). Its defaults
        are the seed tutorial's Keras recipe: SGD with Nesterov momentum, lr 0.05, batches of 100.
        The recipe also holds 20% of the images out to report validation accuracy; here
        `validation_fraction=0` lets the network learn from all the training digits, the same
        ones the SVM below is fitted on.
        """),
        code("""
        cnn = SoftmaxClassifier("lenet5", epochs=EPOCHS, validation_fraction=0.0, random_state=0)
        cnn.fit(X_train, y_train)
        softmax_accuracy = cnn.score(X_test, y_test)
        print(f"LeNet-5 with its softmax head: test accuracy {softmax_accuracy:.3f}")
        cnn.history_[["epoch", "train_loss", "train_accuracy", "seconds"]].tail(3)
        """),
        md("""
        ## 2. The same network without its head

        Given the fitted classifier, `DeepFeatureExtractor` runs the network up to the input of
        its final layer: LeNet-5's F6, 84 values per image. `fit` only builds the headless
        network; nothing is learned.
        """),
        code("""
        extractor = DeepFeatureExtractor(cnn).fit()
        features = extractor.transform(X_test[:5])
        print(features.shape, features.dtype)
        print(extractor.get_feature_names_out()[:4])
        """),
        md("""
        ## 3. In a `Pipeline`, with `C` tuned by `GridSearchCV`

        The extractor goes first, a `StandardScaler` and a `LinearSVC` follow. `GridSearchCV`
        clones the pipeline for every fold and every `C`; the clones share the fitted network
        (it is not retrained) and, through `store=`, the features: the first fit computes each
        image's vector, every later fit reads it from the store.

        The cross-validation scores below are on features of images the network was trained on,
        so they are optimistic; only the test accuracy measures generalisation.
        """),
        code("""
        import tempfile

        from sklearn.model_selection import GridSearchCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import LinearSVC

        from featclf import FeatureStore

        store = FeatureStore(tempfile.mkdtemp(prefix="featclf-quickstart-") + "/features")
        pipe = make_pipeline(DeepFeatureExtractor(cnn, store=store), StandardScaler(), LinearSVC())
        search = GridSearchCV(pipe, {"linearsvc__C": C_GRID}, cv=3).fit(X_train, y_train)
        svm_accuracy = search.score(X_test, y_test)
        print(f"C chosen by 3-fold CV: {search.best_params_['linearsvc__C']:g}")
        print(f"linear SVM on the features: test accuracy {svm_accuracy:.3f}")
        print(f"softmax head:               test accuracy {softmax_accuracy:.3f}")
        """),
        code("""
        cv = pd.DataFrame(search.cv_results_)
        cv = cv[["param_linearsvc__C", "mean_test_score", "std_test_score", "mean_fit_time"]]
        cv.columns = ["C", "cv_accuracy", "cv_std", "fit_seconds"]
        cv
        """),
        code("""
        fig, ax = plt.subplots()
        ax.errorbar(cv["C"].astype(float), cv["cv_accuracy"], yerr=cv["cv_std"], marker="o",
                    capsize=3, label="linear SVM, 3-fold CV (training digits)")
        ax.axhline(softmax_accuracy, color="black", ls="--", label="softmax head (test digits)")
        ax.plot([search.best_params_["linearsvc__C"]], [svm_accuracy], "r*", ms=12,
                label="linear SVM, chosen C (test digits)")
        ax.set(xscale="log", xlabel="C", ylabel="accuracy", title="LeNet-5 features + linear SVM")
        ax.margins(y=0.15)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize=8)
        plt.show()
        """),
        code("""
        n_fits = len(C_GRID) * 3 + 1
        for info in store.info():
            print(f"{n_fits} pipeline fits, {info.vectors} vectors of {info.dim} values "
                  f"in the store ({len(X_train)} training + {len(X_test)} test digits)")
        """),
        md("""
        ## 4. Named feature columns: `set_output(transform="pandas")`

        Like any scikit-learn transformer, the extractor can return a `DataFrame`. Its columns
        are named `<model>_f<i>` (`<model>_<layer>_f<i>` for a chosen layer), and the names
        travel through the rest of a pipeline.
        """),
        code("""
        named = DeepFeatureExtractor(cnn).set_output(transform="pandas").fit()
        named.transform(X_test[:3]).iloc[:, :6]
        """),
        code("""
        from sklearn.decomposition import PCA

        view = make_pipeline(DeepFeatureExtractor(cnn, store=store), StandardScaler(), PCA(2))
        points = view.set_output(transform="pandas").fit_transform(X_test)
        print(points.head(3))

        fig, ax = plt.subplots(figsize=(5, 4.2))
        scatter = ax.scatter(points["pca0"], points["pca1"], c=y_test, cmap="tab10", s=8)
        ax.legend(*scatter.legend_elements(), title="digit", fontsize=7, loc="center left",
                  bbox_to_anchor=(1, 0.5))
        ax.set(xlabel="pca0", ylabel="pca1", title="Test digits in LeNet-5 feature space")
        plt.show()
        """),
        md("""
        ## 5. It pickles like any pipeline

        A fitted extractor pickles with its network (moved to the CPU first), so the whole
        pipeline can be saved with `pickle` or `joblib` and served elsewhere.
        """),
        code("""
        import pickle

        blob = pickle.dumps(search.best_estimator_)
        restored = pickle.loads(blob)
        same = (restored.predict(X_test) == search.predict(X_test)).all()
        print(f"pickled pipeline: {len(blob) / 1e3:.0f} kB; same predictions after loading: {same}")
        """),
        md("""
        ## Next

        * [02_seed_claim](02_seed_claim.ipynb): the seed tutorial's experiment step by step, with
          McNemar's test, bootstrap intervals and the accuracy-vs-C curve.
        * [03_transfer_and_layers](03_transfer_and_layers.ipynb): an MNIST-trained CNN as a frozen
          extractor for other digits, and which layer to take features from.
        * [04_image_folder](04_image_folder.ipynb): image folders, the feature store and the
          `featclf extract` command.
        """),
    ]


# --------------------------------------------------------------------------------------------
# 02: the seed tutorial's claim, step by step
# --------------------------------------------------------------------------------------------

def seed_claim() -> list[nbformat.NotebookNode]:
    """Cells of ``02_seed_claim``."""
    return [
        md("""
        # The seed tutorial's claim, step by step

        The tutorial this project grew from (seed 000) trains a small Keras CNN on MNIST and then
        says: *keep the trained network minus its last layer, feed it the training images, and
        retrain a multiclass SVM on its outputs; the results are similar to the softmax
        layer's, depending on the SVM's parameters.*

        This notebook runs that experiment one step at a time:

        1. train the seed's CNN (`seed_cnn`) with the seed's recipe,
        2. cut off its softmax layer and extract 128-value features,
        3. fit SVMs (and logistic regression) on the features, `C` chosen by cross-validation,
        4. compare with the softmax head on the same 1,000 test digits: McNemar's test and
           bootstrap confidence intervals (`featclf.stats`),
        5. draw accuracy against `C`: the "depending on the SVM's parameters" part,
        6. and finally run the whole experiment in one call, `featclf.compare.compare`.
        """),
        code("""
        # Parameters. QUICK = True runs the same steps on fewer images and epochs in seconds (the
        # test suite runs every notebook that way); the saved outputs come from QUICK = False.
        QUICK = False
        EPOCHS = 1 if QUICK else 10          # the seed's 10 epochs
        N_IMAGES = 600 if QUICK else 5000    # all of MNIST-5k: 4,000 train / 1,000 test
        PER_DECADE = 1 if QUICK else 2       # C values per factor of ten in the C grids
        N_RESAMPLES = 200 if QUICK else 2000 # bootstrap resamples
        """, tags=(PARAMETERS_TAG,)),
        code(SETUP),
        md("""
        ## The data

        MNIST-5k, split 80/20 (stratified, seed 0): the split `featclf compare` and `make demo`
        use, so the numbers here can be checked against the report in
        `artifacts/reports/mnist5k/`.
        """),
        code("""
        from sklearn.utils import resample

        from featclf.data import load_mnist5k
        from featclf.train import split_train_test

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
        """),
        md("""
        ## 1. The seed's CNN and its recipe

        `seed_cnn` is the tutorial's Keras network: Conv 4@5x5 tanh, Conv 8@3x3 tanh, max-pool,
        Conv 16@3x3 relu, max-pool, Dense 128 tanh, Dense 10 softmax. `SoftmaxClassifier`'s
        defaults are its training recipe: SGD, learning rate 0.05 with Keras' decay 1e-6 per
        batch, Nesterov momentum 0.9, batches of 100, 10 epochs, shuffling, 20% of the training
        images held out to report validation accuracy.
        """),
        code("""
        from featclf import SoftmaxClassifier
        from featclf.models import get_model

        print(get_model("seed_cnn"))
        recipe = SoftmaxClassifier("seed_cnn").get_params()
        print({k: recipe[k] for k in ("optimizer", "lr", "lr_decay", "momentum", "nesterov",
                                      "batch_size", "epochs", "validation_fraction")})
        """),
        code("""
        import time

        started = time.perf_counter()
        cnn = SoftmaxClassifier("seed_cnn", epochs=EPOCHS, random_state=0).fit(X_train, y_train)
        print(f"trained in {time.perf_counter() - started:.0f} s")
        history = cnn.history_
        history
        """),
        code("""
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
        """),
        md("""
        ## 2. Cut off the softmax layer

        `DeepFeatureExtractor(cnn)` is the trained network up to the input of its last layer:
        the 128 outputs of the Dense-128 tanh layer. The training images go through it once,
        the test images once.
        """),
        code("""
        from featclf import DeepFeatureExtractor

        extractor = DeepFeatureExtractor(cnn).fit()
        print(extractor.feature_model_)
        started = time.perf_counter()
        F_train, F_test = extractor.transform(X_train), extractor.transform(X_test)
        seconds = time.perf_counter() - started
        print(f"features: train {F_train.shape}, test {F_test.shape} "
              f"({(len(F_train) + len(F_test)) / seconds:.0f} images/s)")
        """),
        md("""
        ## 3. SVMs on the features, `C` chosen by cross-validation

        `featclf.pipelines` builds the classifiers (a `StandardScaler`, then the classifier; the
        grid parameter is always `clf__C`): a linear SVM (one-vs-rest `LinearSVC`), an RBF SVM
        (`SVC`), and multinomial logistic regression, which is a softmax layer retrained on
        fixed features. `C` is chosen by 3-fold cross-validation on the training features only;
        the test digits never influence it. The grids reach further down than featclf's default
        ones (`featclf.pipelines.c_grid`, from 1e-3) to show, in step 5, where the SVMs break
        down.
        """),
        code("""
        from sklearn.model_selection import GridSearchCV

        from featclf.pipelines import make_classifier


        def log_grid(low: int, high: int) -> list[float]:
            \"\"\"C from 10**low to 10**high, PER_DECADE values per factor of ten.\"\"\"
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
        """),
        md("""
        ## 4. Is the difference real? McNemar's test and bootstrap intervals

        All classifiers predict the same 1,000 test digits, so they are compared *paired*:

        * **McNemar's test** looks only at the digits the two classifiers disagree on: `b`
          (softmax right, SVM wrong) and `c` (softmax wrong, SVM right). If both were equally
          good, each disagreement would be a fair coin flip.
        * **Bootstrap intervals**: resample the test digits with replacement, recompute the
          accuracy (or the paired difference of accuracies), take the 2.5% and 97.5% quantiles.
        """),
        code("""
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
        """),
        code("""
        best = max(CLASSIFIERS, key=lambda name: (predictions[name] == y_test).mean())
        test = mcnemar(y_test, softmax_pred, predictions[best])
        diff = bootstrap_accuracy_diff(y_test, predictions[best], softmax_pred,
                                       n_resamples=N_RESAMPLES, random_state=0)
        verdict = "no significant difference" if test.pvalue >= 0.05 else "a significant difference"
        print(f"Best classifier on the features: {CLASSIFIERS[best]}, accuracy "
              f"{(predictions[best] == y_test).mean():.3f} vs {softmax_accuracy:.3f} for the "
              f"softmax head: difference {diff.diff:+.3f} (95% CI [{diff.ci_low:+.3f}, "
              f"{diff.ci_high:+.3f}]), McNemar p = {test.pvalue:.3g} -> {verdict} at the 5% level.")
        """),
        md("""
        Choosing the best of three classifiers by their test accuracy flatters the winner a
        little (the rows of the table above, one test each, do not have that problem).

        The digits the two disagree on (top: the softmax head is right and the best classifier on
        the features is wrong; bottom: the other way round), with the wrong answer in red:
        """),
        code("""
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
        axes[0, 0].text(-0.3, 0.5, f"{best}\\nwrong", transform=axes[0, 0].transAxes,
                        ha="right", va="center", fontsize=8)
        axes[1, 0].text(-0.3, 0.5, "softmax\\nwrong", transform=axes[1, 0].transAxes, ha="right",
                        va="center", fontsize=8)
        plt.show()
        print(f"{len(only_softmax)} digits only the softmax head gets right, {len(only_best)} "
              f"only the {CLASSIFIERS[best]} gets right (true / wrong label above each)")
        """),
        md("""
        ## 5. "Depending on the SVM's parameters": accuracy against `C`

        Every `C` of each grid, refitted on all training features and scored on the test digits
        (solid), next to its cross-validation accuracy on the training features (dotted; higher,
        because the network was trained on those very images). `C` trades the margin against
        training errors: small values regularise strongly, large ones fit the training features
        closely. Whether an SVM ends up above or below the softmax head depends on it.
        """),
        code("""
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
            Line2D([], [], color="gray", ls=":", label="3-fold CV,\\ntraining digits")]
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
        plt.show()

        for name, curve in curves.items():
            low, high = curve.loc[curve["test"].idxmin()], curve.loc[curve["test"].idxmax()]
            print(f"{CLASSIFIERS[name]:>19}: test accuracy {low.test:.3f} at C={low.C:.3g} to "
                  f"{high.test:.3f} at C={high.C:.3g} (softmax head {softmax_accuracy:.3f})")
        """),
        md("""
        ## 6. The same experiment in one call

        `featclf.compare.compare` runs all of the above on identical splits: trains the network,
        extracts, sweeps `C` (featclf's default grids), and computes every statistic.
        `featclf.report.write_report` turns its table into Markdown/HTML with plots; `featclf
        compare` (and `make demo`) does both from the shell.

        One difference matters. Above, the network followed the seed's recipe to the letter and
        held 20% of the training digits out for validation, so it learned from 80% of them while
        the SVMs were fitted on the features of all of them: part of the SVMs' edge was those
        extra labelled digits. `compare` trains the network with `validation_fraction=0`, so
        that the softmax head and the SVMs learn from exactly the same digits.
        """),
        code("""
        from featclf.compare import compare
        from featclf.report import summary_table, verdict

        results = compare((X, y), models=["seed_cnn"], classifiers=list(CLASSIFIERS),
                          epochs=EPOCHS, n_resamples=N_RESAMPLES, dataset="mnist5k",
                          random_state=0)
        columns = ["classifier", "C", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
                   "diff_vs_softmax", "diff_ci_low", "diff_ci_high", "mcnemar_p"]
        summary_table(results)[columns]
        """),
        code("""
        print(verdict(results))
        full = results.query("classifier == 'softmax'")["accuracy"].iloc[0]
        print(f"\\nThe softmax head learned from {round(0.8 * len(X_train))} training digits in "
              f"steps 1-5 (test accuracy {softmax_accuracy:.3f}) and from all {len(X_train)} "
              f"here ({full:.3f}).")
        """),
    ]


# --------------------------------------------------------------------------------------------
# 03: transfer to 8x8 digits, and the layer sweep
# --------------------------------------------------------------------------------------------

def transfer_and_layers() -> list[nbformat.NotebookNode]:
    """Cells of ``03_transfer_and_layers``."""
    return [
        md("""
        # Transfer and layers

        Two questions about where the features come from:

        1. **Transfer.** Can a CNN trained on one data set serve, frozen, as the feature extractor
           for another? LeNet-5 trained on MNIST-5k (`artifacts/models/lenet5-mnist5k.pt`) meets
           scikit-learn's 8x8 digits (`load_digits_images`, 1,797 images), which its
           preprocessing resizes to 28x28. A linear SVM on its features is compared with the
           same network trained from scratch on the 8x8 digits, also as the number of training
           images shrinks.
        2. **Layers.** Which layer of the trained LeNet-5 gives the best features for a linear
           SVM, and how should convolutional maps be turned into vectors (`pooling="avg"` or
           `"flatten"`)? A random-weight LeNet-5 shows what training adds.
        """),
        code("""
        # Parameters. QUICK = True runs the same steps on fewer images and epochs in seconds (the
        # test suite runs every notebook that way); the saved outputs come from QUICK = False.
        QUICK = False
        N_DIGITS = 400 if QUICK else 1797         # all of scikit-learn's 8x8 digits
        EPOCHS = 2 if QUICK else 15               # from-scratch training (LeNet-5's recipe: 15)
        TRAIN_SIZES = [50] if QUICK else [30, 100, 300]   # smaller training sets (learning curve)
        N_MNIST = 500 if QUICK else 5000          # images of MNIST-5k for the layer sweep
        SWEEP_C = [0.01] if QUICK else [0.001, 0.01, 0.1]   # C values of the layer sweep
        """, tags=(PARAMETERS_TAG,)),
        code(SETUP),
        code("""
        from pathlib import Path

        from featclf import DeepFeatureExtractor, SoftmaxClassifier
        from featclf.data import load_digits_images, load_mnist5k
        from featclf.train import split_train_test

        # The committed checkpoint, found from the notebook's folder or the repository root.
        ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "artifacts").is_dir())
        CHECKPOINT = ROOT / "artifacts" / "models" / "lenet5-mnist5k.pt"
        mnist_net = SoftmaxClassifier.load(CHECKPOINT)
        print(f"{CHECKPOINT.name}: {mnist_net.model_name_}, trained on MNIST-5k for "
              f"{mnist_net.n_epochs_} epochs, classes {mnist_net.classes_.tolist()}")
        """),
        md("""
        ## Part 1: an MNIST-trained CNN as a frozen extractor for 8x8 digits

        The 8x8 digits are a different data set: another resolution, 17 grey levels, other
        writers. The checkpoint carries LeNet-5's preprocessing (28x28, one channel, MNIST's mean
        and std), so by default the extractor stretches each 8x8 image to 28x28, the digit
        filling the whole frame. MNIST's digits, though, are 20x20 pixels centred in a 28x28
        frame. `preprocess=` takes any callable on `(N, C, H, W)` tensors, so a few lines can
        frame the 8x8 digits the way MNIST does:
        """),
        code("""
        import torch
        import torch.nn.functional as F
        from sklearn.utils import resample


        class MnistFraming:
            \"\"\"Frame digits as MNIST does: 20x20, centred in 28x28, MNIST's mean and std.\"\"\"

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
        """),
        md("""
        Ways to classify the 8x8 digits, all scored on the same 20% of test digits:

        * **frozen MNIST features + linear SVM**: the checkpoint without its head, with either
          preprocessing, `C` by 3-fold cross-validation on the training digits' features;
        * **softmax from scratch**: the same architecture trained end to end on the 8x8 digits
          (LeNet-5's recipe: 15 epochs, SGD with Nesterov momentum, lr 0.05);
        * **the MNIST softmax head as it is**, with no training on the 8x8 digits at all
          (both data sets have the classes 0-9).
        """),
        code("""
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
        """),
        code("""
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
        """),
        md("""
        ### With fewer labelled images

        Frozen features need labels only for the SVM; training from scratch needs them for the
        whole network. Below, both learn from stratified subsets of the training digits. The
        from-scratch network gets the same number of optimizer steps at every size (as many as
        its full run above: more epochs on fewer images), so that small sets are not also
        under-trained.
        """),
        code("""
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
        """),
        md("""
        `featclf compare --data digits --weights artifacts/models/lenet5-mnist5k.pt --out DIR`
        runs the transfer experiment as a report, with a third baseline: the MNIST network
        fine-tuned end to end on the 8x8 digits.

        ## Part 2: which layer?

        LeNet-5's layers carry the tutorial's names: `c1` (6 maps of 28x28), `s2` (pooling),
        `c3` (16 maps of 10x10), `s4` (16 maps of 5x5), `c5` (120 maps of 1x1), `f6` (84 values)
        and the output layer. `layer=` picks any of them (any graph node:
        `featclf.models.layer_names`), `pooling=` turns maps into vectors: `"avg"` keeps one mean
        per map (`d = C`), `"flatten"` keeps every value (`d = C*H*W`). The default, `layer=None`,
        is the input of the final layer: for LeNet-5, `f6`'s output.

        Features of MNIST-5k's 4,000 training and 1,000 test digits (the split the checkpoint
        was trained on, so the test digits are unseen), from the trained checkpoint and from a
        LeNet-5 with random weights; then a linear SVM per layer. Left out because they would
        repeat a row: `s4` averaged (`s4` averages 2x2 blocks of `c3`, so its means are `c3`'s)
        and `c5` flattened (its maps are 1x1).
        """),
        code("""
        from featclf.models import get_model, layer_names

        print(layer_names(get_model("lenet5")))
        Xm_train, Xm_test, ym_train, ym_test = split_train_test(X_mnist, y_mnist)

        f6 = DeepFeatureExtractor(CHECKPOINT, layer="f6").fit().transform(Xm_test)
        penultimate = DeepFeatureExtractor(CHECKPOINT).fit().transform(Xm_test)
        print(f"layer='f6' and layer=None give the same vectors: {np.array_equal(f6, penultimate)}")
        """),
        code("""
        from sklearn.base import clone

        SWEEP = [("c3", "avg"), ("c3", "flatten"), ("s4", "flatten"), ("c5", "avg"),
                 ("f6", "avg")]
        NETWORKS = {"trained on MNIST": CHECKPOINT, "random weights": "lenet5"}
        # C by 3-fold CV on 1,000 of the training digits, then refitted on all of them: a
        # linear SVM on c3's 1,600 flattened values takes half a minute per fit.
        cv_part = np.arange(min(1000, len(Xm_train)))
        sweep = []
        for network, model in NETWORKS.items():
            for layer, pooling in SWEEP:
                ext = DeepFeatureExtractor(model, layer=layer, pooling=pooling).fit()
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
        """),
        code("""
        trained = sweep[sweep["network"] == "trained on MNIST"]
        labels = [f"{r.layer}\\n{r.pooling}, d={r.d}" for r in trained.itertuples()]
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
        """),
        md("""
        The same sweep from the shell, as a report with confusion matrices and C curves:
        `featclf compare --model lenet5 --layer c5 --layer f6 --out DIR` (see
        `artifacts/reports/layers-lenet5/`).
        """),
    ]


# --------------------------------------------------------------------------------------------
# 04: an image folder, the feature store, `featclf extract`, and the Kaggle recipe
# --------------------------------------------------------------------------------------------

DRAWING = '''
from PIL import Image, ImageDraw

FUR = [(230, 140, 40), (120, 120, 120), (140, 90, 50), (200, 170, 120), (235, 230, 220)]


def draw_animal(kind: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A cartoon "cat" (pointy ears, stripes, whiskers) or "dog" (floppy ears, spots, nose).

    Both share the fur colours and vary in position, size, background, rotation and noise, so
    the classes differ in shape and texture, not in colour.
    """
    s = 4                                             # drawn 4x larger, then downsampled
    w = size * s
    background = tuple(int(v) for v in rng.integers(150, 256, 3))
    image = Image.new("RGB", (w, w), background)
    draw = ImageDraw.Draw(image)
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.5) * w
    r = rng.uniform(0.13, 0.24) * w                   # head radius
    fur = tuple(int(np.clip(c + rng.normal(0, 15), 0, 255)) for c in FUR[rng.integers(5)])
    dark = tuple(max(0, c - 90) for c in fur)
    draw.ellipse([cx - 1.6 * r, cy + 0.5 * r, cx + 1.6 * r, cy + 2.6 * r], fill=fur)   # body
    if kind == "cat":
        for side in (-1, 1):                          # pointy ears
            ex = cx + side * 0.6 * r
            draw.polygon([(ex - 0.45 * r, cy - 0.6 * r), (ex + 0.45 * r, cy - 0.6 * r),
                          (ex + side * 0.2 * r, cy - 1.5 * r)], fill=fur)
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fur)                           # head
    if kind == "cat":
        for k in range(3):                            # stripes
            y = cy + (0.9 + 0.45 * k) * r
            draw.line([(cx - 1.2 * r, y), (cx + 1.2 * r, y + rng.normal(0, 0.1) * r)],
                      fill=dark, width=3 * s)
        for side in (-1, 1):                          # whiskers
            for k in (-1, 0, 1):
                draw.line([(cx + side * 0.3 * r, cy + 0.3 * r),
                           (cx + side * 1.4 * r, cy + (0.3 + 0.25 * k) * r)],
                          fill=(20, 20, 20), width=s)
    else:
        for side in (-1, 1):                          # floppy ears
            ex = cx + side * 0.9 * r
            draw.ellipse([ex - 0.35 * r, cy - 0.6 * r, ex + 0.35 * r, cy + 0.9 * r], fill=dark)
        for _ in range(rng.integers(2, 5)):           # spots
            sx, sy = cx + rng.uniform(-1.2, 1.2) * r, cy + rng.uniform(0.9, 2.2) * r
            sr = rng.uniform(0.15, 0.35) * r
            draw.ellipse([sx - sr, sy - sr, sx + sr, sy + sr], fill=dark)
        draw.ellipse([cx - 0.25 * r, cy + 0.3 * r, cx + 0.25 * r, cy + 0.6 * r],
                     fill=(20, 20, 20))               # nose
    for side in (-1, 1):                              # eyes
        ex, ey, er = cx + side * 0.4 * r, cy - 0.2 * r, 0.13 * r
        draw.ellipse([ex - er, ey - er, ex + er, ey + er], fill=(20, 20, 20))
    image = image.resize((size, size), Image.LANCZOS)
    image = image.rotate(rng.uniform(-15, 15), fillcolor=background)
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
'''


def image_folder() -> list[nbformat.NotebookNode]:
    """Cells of ``04_image_folder``."""
    return [
        md("""
        # An image folder: cats vs dogs, a feature store and `featclf extract`

        The workflow for your own images, on a cat-vs-dog folder this notebook draws itself
        (no download needed):

        1. write `train/cat/cat.1.jpg`, `train/dog/dog.1.jpg`, ... and a `test/` folder,
        2. list them with their labels: `image_files`,
        3. train a small CNN on them with its softmax head (here, because pre-trained ImageNet
           weights cannot be downloaded on this machine) and save it,
        4. extract its features into a `FeatureStore`; a second run reuses every vector,
        5. run the same extraction as a batch job: the `featclf extract` command,
        6. classify with an SVM on the stored features, and export them (`featclf store
           export`),
        7. and at the end: the same code on Kaggle's dogs-vs-cats with ImageNet weights.
        """),
        code("""
        # Parameters. QUICK = True runs the same steps on fewer images and epochs in seconds (the
        # test suite runs every notebook that way); the saved outputs come from QUICK = False.
        QUICK = False
        N_TRAIN = 12 if QUICK else 100      # training images per class
        N_TEST = 6 if QUICK else 50         # test images per class
        EPOCHS = 1 if QUICK else 8
        RUN_FULL = False                    # True: the Kaggle dogs-vs-cats section (downloads)
        """, tags=(PARAMETERS_TAG,)),
        code(SETUP),
        md("""
        ## 1. A folder of cats and dogs

        Cartoon animals drawn with PIL: "cats" have pointy ears, stripes and whiskers, "dogs"
        floppy ears, spots and a nose. Both come in the same fur colours, at random positions,
        sizes and rotations, on random backgrounds, with pixel noise. They are saved as JPEGs in
        the torchvision `ImageFolder` layout with Kaggle-style file names.
        """),
        code(DRAWING),
        code("""
        import tempfile
        from pathlib import Path

        WORK = Path(tempfile.mkdtemp(prefix="featclf-cats-dogs-"))
        rng = np.random.default_rng(0)
        for part, n in (("train", N_TRAIN), ("test", N_TEST)):
            for kind in ("cat", "dog"):
                (WORK / part / kind).mkdir(parents=True)
                for i in range(1, n + 1):
                    draw_animal(kind, rng).save(WORK / part / kind / f"{kind}.{i}.jpg", quality=90)
        print(sorted(str(p.relative_to(WORK)) for p in WORK.rglob("*.jpg"))[:3], "...")

        fig, axes = plt.subplots(2, 8, figsize=(8, 2.2))
        for row, kind in enumerate(("cat", "dog")):
            for i, ax in enumerate(axes[row], start=1):
                ax.imshow(Image.open(WORK / "train" / kind / f"{kind}.{i}.jpg"))
                ax.axis("off")
            axes[row, 0].set_title(kind, fontsize=9, loc="left")
        plt.show()
        """),
        md("""
        ## 2. `image_files`: paths and labels

        `image_files(folder)` finds the images and reads the labels off the layout: class
        subfolders (`train/cat/...`), or, in a flat folder, the file name before its first `.`
        (Kaggle's `cat.123.jpg`). Every featclf estimator and command takes the result as `X`;
        `.labels` is `y`.
        """),
        code("""
        from featclf.data import image_files

        train, test = image_files(WORK / "train"), image_files(WORK / "test")
        print(f"train: {len(train)} images, layout {train.layout!r}, "
              f"labels {pd.Series(train.labels).value_counts().to_dict()}")
        print(f"test:  {len(test)} images, layout {test.layout!r}")

        import shutil

        flat = WORK / "kaggle-style"                 # Kaggle's layout: one folder, label in name
        flat.mkdir()
        for path in train.paths[:3] + train.paths[-3:]:
            shutil.copy(path, flat)
        kaggle = image_files(flat)
        print(f"flat folder: layout {kaggle.layout!r}, labels {kaggle.labels.tolist()}")
        """),
        md("""
        ## 3. A CNN trained on the folder

        With internet access this step would be a download: an ImageNet-trained ResNet (section
        7). Here a ResNet-18 is trained from scratch on the training folder, on 32x32 RGB
        inputs (`ImagePreprocess`: resize, channels, normalisation), and saved as a featclf
        checkpoint: a state dict plus metadata naming the architecture and its preprocessing,
        loadable with `torch.load(..., weights_only=True)`.
        """),
        code("""
        import time

        from featclf import DeepFeatureExtractor, FeatureStore, SoftmaxClassifier
        from featclf.data import ImagePreprocess

        IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        started = time.perf_counter()
        cnn = SoftmaxClassifier("resnet18", preprocess=ImagePreprocess(32, 3, IMAGENET_MEAN,
                                                                       IMAGENET_STD),
                                optimizer="adam", lr=1e-3, batch_size=20, epochs=EPOCHS,
                                validation_fraction=0.0, random_state=0)
        cnn.fit(train, train.labels)
        CNN_PATH = cnn.save(WORK / "cats-dogs-resnet18.pt")
        print(f"trained {EPOCHS} epochs in {time.perf_counter() - started:.0f} s; saved "
              f"{CNN_PATH.name} ({CNN_PATH.stat().st_size / 1e6:.0f} MB)")
        softmax_pred = cnn.predict(test)
        print(f"softmax head, test accuracy: {(softmax_pred == test.labels).mean():.3f}")
        """),
        md("""
        ## 4. Features into a `FeatureStore`

        A store is a directory of feature vectors keyed by everything that decides them: the
        network's weights, the layer, pooling, preprocessing, precision, and each image's content
        (a hash of the file's bytes; a renamed or moved file is still found). The first
        extraction computes every vector; the second reads all of them back and never runs the
        network.
        """),
        code("""
        store = FeatureStore(WORK / "features")
        extractor = DeepFeatureExtractor(CNN_PATH, store=store).fit()
        for attempt in ("first run", "second run"):
            result = extractor.extract(train)
            print(f"{attempt}: {result.features.shape} features, {result.n_computed} computed, "
                  f"{result.n_reused} read from the store, {result.seconds:.2f} s")
        """),
        md("""
        ## 5. The same job from the shell: `featclf extract`

        `featclf extract` is the batch version: it streams a folder, or a CSV of `path,label`
        lines, through the network into the store, shard by shard, so a killed job resumes where
        it stopped, and ends with a summary. It keys vectors exactly as the Python extractor
        does. Given a CSV of both folders, it reuses the training images' vectors computed
        above, computes only the test images, and records every image's label in the store;
        the Python extractor then finds the test vectors there.
        """),
        code("""
        import subprocess
        import sys


        def featclf(*args):
            \"\"\"Run the `featclf` command (of this notebook's Python) and print its output.\"\"\"
            done = subprocess.run([sys.executable, "-m", "featclf", *map(str, args)],
                                  capture_output=True, text=True)
            print(done.stdout + done.stderr)
            done.check_returncode()


        images = pd.DataFrame({"path": train.paths + test.paths,
                               "label": np.concatenate([train.labels, test.labels])})
        images.to_csv(WORK / "images.csv", index=False)
        featclf("extract", "--model", CNN_PATH, "--images", WORK / "images.csv",
                "--store", store.root, "--no-progress")
        result = extractor.extract(test)
        print(f"Python, test images: {result.n_computed} computed, {result.n_reused} read from "
              "the store")
        for info in store.info():
            print(f"store: {info.vectors} vectors of {info.dim} values, {info.shards} shards, "
                  f"{info.bytes / 1e3:.0f} kB")
        """),
        md("""
        ## 6. An SVM on the stored features

        The extractor with `store=` goes first in a pipeline; the grid search over `C` and the
        scoring on the test folder read every vector from the store. McNemar's test compares the
        SVM with the network's own softmax head on the same test images.
        """),
        code("""
        from sklearn.model_selection import GridSearchCV

        from featclf.pipelines import c_grid, make_svm
        from featclf.stats import mcnemar

        pipe = make_svm("linear")
        pipe.steps.insert(0, ("features", DeepFeatureExtractor(CNN_PATH, store=store)))
        search = GridSearchCV(pipe, {"clf__C": c_grid("linear")}, cv=3)
        search.fit(train, train.labels)
        svm_pred = search.predict(test)
        test_result = mcnemar(test.labels, softmax_pred, svm_pred)
        print(f"linear SVM (C={search.best_params_['clf__C']:g}): test accuracy "
              f"{(svm_pred == test.labels).mean():.3f}; softmax head "
              f"{(softmax_pred == test.labels).mean():.3f}; McNemar p = {test_result.pvalue:.3g}")
        pd.crosstab(pd.Series(test.labels, name="true"), pd.Series(svm_pred, name="SVM"))
        """),
        md("""
        `featclf store export` writes one configuration's vectors, with each image's content
        digest, path and label (as `featclf extract` read them), to Parquet or NPZ, for any
        other tool:
        """),
        code("""
        featclf("store", "export", store.root, WORK / "vectors.parquet")
        table = pd.read_parquet(WORK / "vectors.parquet")
        table["path"] = table["path"].str.replace(str(WORK), "WORK", regex=False)
        print(table.shape)
        table.head(3)
        """),
        code("""
        from sklearn.decomposition import PCA

        vectors = np.stack(table["vector"].to_numpy())
        points = PCA(2).fit_transform(vectors)
        part = np.where(table["path"].str.contains("/test/"), "test", "train")
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for label, color in (("cat", "tab:orange"), ("dog", "tab:blue")):
            for split, marker in (("train", "o"), ("test", "x")):
                keep = (table["label"] == label).to_numpy() & (part == split)
                ax.scatter(points[keep, 0], points[keep, 1], c=color, marker=marker, s=18,
                           label=f"{label} ({split})")
        ax.set(xlabel="PC 1", ylabel="PC 2", title="Exported ResNet-18 features, PCA")
        ax.legend(fontsize=8)
        plt.show()
        """),
        md("""
        ## 7. The same code on Kaggle's dogs-vs-cats, with ImageNet weights

        Download `train.zip` of [Dogs vs. Cats](https://www.kaggle.com/c/dogs-vs-cats) (25,000
        JPEGs named `cat.0.jpg` ... `dog.12499.jpg` in one folder) and unzip it. Then only the
        folder and the network change: `image_files` reads the labels from the file names, and
        `DeepFeatureExtractor("resnet50", weights="IMAGENET1K_V2")` is torchvision's ResNet-50
        with its ImageNet weights (downloaded once by torchvision), with featclf's preprocessing
        for it (shorter side resized to 256, centre crop 224, ImageNet mean and std) and without
        its 1000-class head: 2048 values per image. On a GPU, `device="auto"` uses it with bf16
        autocast.

        The cell below runs only with `RUN_FULL = True` (it downloads weights and needs the
        Kaggle folder); it is skipped otherwise.
        """),
        code("""
        KAGGLE = Path("~/data/dogs-vs-cats/train").expanduser()   # cat.0.jpg ... dog.12499.jpg

        if RUN_FULL:
            from sklearn.model_selection import train_test_split

            files = image_files(KAGGLE)                           # labels "cat" / "dog"
            extractor = DeepFeatureExtractor("resnet50", weights="IMAGENET1K_V2",
                                             store=KAGGLE.parent / "features", batch_size=128,
                                             num_workers=4, progress=True).fit()
            train_idx, test_idx = train_test_split(np.arange(len(files)), test_size=0.2,
                                                   stratify=files.labels, random_state=0)
            kaggle_pipe = make_svm("linear")
            kaggle_pipe.steps.insert(0, ("features", extractor))
            search = GridSearchCV(kaggle_pipe, {"clf__C": c_grid("linear")}, cv=3)
            search.fit(files[train_idx], files.labels[train_idx])   # every image extracted once
            print(f"test accuracy {search.score(files[test_idx], files.labels[test_idx]):.4f}")
        else:
            print("RUN_FULL = False: skipped (set RUN_FULL = True to run it on the Kaggle folder)")
        """),
        md("""
        Or as a batch job from the shell (resumable; `--engine ray` spreads it over a Ray
        cluster), then the vectors exported for other tools:

        ```bash
        featclf extract --model resnet50 --weights IMAGENET1K_V2 \\
            --images ~/data/dogs-vs-cats/train --store ~/data/dogs-vs-cats/features \\
            --batch-size 128 --num-workers 4
        featclf store info ~/data/dogs-vs-cats/features
        featclf store verify ~/data/dogs-vs-cats/features
        featclf store export ~/data/dogs-vs-cats/features dogs-vs-cats-resnet50.parquet
        ```

        Offline, save the weights once where you have internet, e.g.
        `torch.save(torchvision.models.resnet50(weights="IMAGENET1K_V2").state_dict(), "r50.pt")`,
        and pass `--weights r50.pt` (or `weights="r50.pt"`) instead.
        """),
    ]


NOTEBOOKS: dict[str, Callable[[], list[nbformat.NotebookNode]]] = {
    "01_quickstart": quickstart,
    "02_seed_claim": seed_claim,
    "03_transfer_and_layers": transfer_and_layers,
    "04_image_folder": image_folder,
}


def build_notebook(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` (a key of :data:`NOTEBOOKS`), without outputs.

    Cell ids are fixed (``cell-00``, ``cell-01``, ...) so that rebuilding changes nothing that
    the cell sources do not change.
    """
    nb = nbformat.v4.new_notebook()
    nb.cells = NOTEBOOKS[name]()
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook's code cell tagged ``parameters`` (which must be its first code cell)."""
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    if not code_cells or PARAMETERS_TAG not in code_cells[0].metadata.get("tags", []):
        raise ValueError(f"the first code cell must be tagged {PARAMETERS_TAG!r}")
    return code_cells[0]


def set_quick(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` whose parameters cell says ``QUICK = True`` instead of ``QUICK = False``."""
    nb = nbformat.from_dict(nb)  # a deep copy
    cell = parameters_cell(nb)
    source, count = _QUICK_LINE.subn("QUICK = True", cell.source)
    if count != 1:
        raise ValueError(f"the parameters cell must set QUICK = False on one line:\n{cell.source}")
    cell.source = source
    return nb


def execute(nb: nbformat.NotebookNode, *, cwd: str | Path = NOTEBOOK_DIR,
            timeout: int = 1800) -> nbformat.NotebookNode:
    """Run every cell of ``nb`` (in place) with the ``python3`` kernel; returns ``nb``.

    ``python3`` is the kernel of the running interpreter (ipykernel's own kernel spec, whose
    ``python`` Jupyter replaces by ``sys.executable``). Raises
    :class:`nbclient.exceptions.CellExecutionError` on the first failing cell.
    """
    client = NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=timeout, record_timing=False,
                            resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def main(argv: list[str] | None = None) -> int:
    """Build, run and save the notebooks named on the command line (default: all)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", choices=[[], *NOTEBOOKS], metavar="NAME",
                        help=f"notebooks to build (default all: {', '.join(NOTEBOOKS)})")
    parser.add_argument("--quick", action="store_true",
                        help="run with QUICK = True (small settings, for trying edits)")
    parser.add_argument("--out", type=Path, default=NOTEBOOK_DIR,
                        help="folder to write to (default notebooks/)")
    args = parser.parse_args(argv)
    if args.quick and args.out.resolve() == NOTEBOOK_DIR.resolve():
        parser.error("--quick needs --out DIR: notebooks/ keeps the outputs of full runs")
    args.out.mkdir(parents=True, exist_ok=True)
    # The notebooks write their files (images, stores, checkpoints) to temporary folders: keep
    # them in one folder that is removed afterwards. The kernel inherits TMPDIR.
    with (tempfile.TemporaryDirectory(prefix="featclf-notebooks-") as tmp,
          mock.patch.dict(os.environ, {"TMPDIR": tmp})):
        for name in args.names or NOTEBOOKS:
            nb = build_notebook(name)
            if args.quick:
                nb = set_quick(nb)
            started = time.perf_counter()
            execute(nb)
            path = args.out / f"{name}.ipynb"
            nbformat.write(nb, path)
            print(f"{path}: ran in {time.perf_counter() - started:.0f} s, "
                  f"{path.stat().st_size / 1e3:.0f} kB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
