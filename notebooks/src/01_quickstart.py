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
# # Quickstart: a CNN without its softmax head, inside scikit-learn
#
# `DeepFeatureExtractor` is a scikit-learn transformer: images in, one float32 feature
# vector per image out, computed by a trained CNN whose final classification layer has been
# cut off. Everything after it is plain scikit-learn. This notebook
#
# 1. trains LeNet-5 end to end on MNIST-5k (`SoftmaxClassifier`, the softmax baseline),
# 2. puts the same network, headless, first in a `Pipeline` with a linear SVM,
# 3. tunes the SVM's `C` with `GridSearchCV`, with a feature store so that each image goes
#    through the network once however many fits the search runs,
# 4. uses `set_output(transform="pandas")` to get named feature columns.

# %% tags=["parameters"]
# Parameters. QUICK = True runs the same steps on fewer images and epochs in seconds (the
# test suite runs every notebook that way); the saved outputs come from QUICK = False.
QUICK = False
EPOCHS = 1 if QUICK else 10                   # SoftmaxClassifier's default recipe: 10
N_TRAIN = 600 if QUICK else 4000              # MNIST-5k's training split has 4,000
N_TEST = 300 if QUICK else 1000               # ... and its test split 1,000
C_GRID = [0.01, 1.0] if QUICK else [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]

# %%
import matplotlib.pyplot as plt
import pandas as pd

plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (6.4, 3.6), "axes.grid": True,
                     "grid.alpha": 0.3})
pd.set_option("display.precision", 4)

# %% [markdown]
# ## The data: MNIST-5k
#
# 5,000 real MNIST digits ship with featclf (`uint8`, `(n, 28, 28)`). `split_train_test` is
# the stratified, seeded 80/20 split every featclf experiment uses.

# %%
from featclf import DeepFeatureExtractor, SoftmaxClassifier
from featclf.data import load_mnist5k
from featclf.model_selection import split_train_test

X, y = load_mnist5k(return_X_y=True)
X_train, X_test, y_train, y_test = split_train_test(X, y)
X_train, y_train = X_train[:N_TRAIN], y_train[:N_TRAIN]
X_test, y_test = X_test[:N_TEST], y_test[:N_TEST]
print(f"train {X_train.shape} {X_train.dtype}, test {X_test.shape}")

# %% [markdown]
# ## 1. The CNN, trained end to end
#
# `SoftmaxClassifier` is the network trained the usual way, as a scikit-learn classifier
# (`fit`, `predict`, `predict_proba`, `score`, and the per-epoch `history_`). Its defaults
# are the seed tutorial's Keras recipe: SGD with Nesterov momentum, lr 0.05, batches of 100.
# The recipe also holds 20% of the images out to report validation accuracy; here
# `validation_fraction=0` lets the network learn from all the training digits, the same
# ones the SVM below is fitted on.

# %%
cnn = SoftmaxClassifier("lenet5", epochs=EPOCHS, validation_fraction=0.0, random_state=0)
cnn.fit(X_train, y_train)
softmax_accuracy = cnn.score(X_test, y_test)
print(f"LeNet-5 with its softmax head: test accuracy {softmax_accuracy:.3f}")
cnn.history_[["epoch", "train_loss", "train_accuracy", "seconds"]].tail(3)

# %% [markdown]
# ## 2. The same network without its head
#
# Given the fitted classifier, `DeepFeatureExtractor` runs the network up to the input of
# its final layer: LeNet-5's F6, 84 values per image. `fit` only builds the headless
# network; nothing is learned.

# %%
extractor = DeepFeatureExtractor(cnn).fit()
features = extractor.transform(X_test[:5])
print(features.shape, features.dtype)
print(extractor.get_feature_names_out()[:4])

# %% [markdown]
# ## 3. In a `Pipeline`, with `C` tuned by `GridSearchCV`
#
# The extractor goes first, a `StandardScaler` and a `LinearSVC` follow. `GridSearchCV`
# clones the pipeline for every fold and every `C`; the clones share the fitted network
# (it is not retrained) and, through `store=`, the features: the first fit computes each
# image's vector, every later fit reads it from the store.
#
# The cross-validation scores below are on features of images the network was trained on,
# so they are optimistic; only the test accuracy measures generalisation.

# %%
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

# %%
cv = pd.DataFrame(search.cv_results_)
cv = cv[["param_linearsvc__C", "mean_test_score", "std_test_score", "mean_fit_time"]]
cv.columns = ["C", "cv_accuracy", "cv_std", "fit_seconds"]
cv

# %%
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

# %%
n_fits = len(C_GRID) * 3 + 1
for info in store.info():
    print(f"{n_fits} pipeline fits, {info.vectors} vectors of {info.dim} values "
          f"in the store ({len(X_train)} training + {len(X_test)} test digits)")

# %% [markdown]
# ## 4. Named feature columns: `set_output(transform="pandas")`
#
# Like any scikit-learn transformer, the extractor can return a `DataFrame`. Its columns
# are named `<model>_f<i>` (`<model>_<layer>_f<i>` for a chosen layer), and the names
# travel through the rest of a pipeline.

# %%
named = DeepFeatureExtractor(cnn).set_output(transform="pandas").fit()
named.transform(X_test[:3]).iloc[:, :6]

# %%
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

# %% [markdown]
# ## 5. It pickles like any pipeline
#
# A fitted extractor pickles with its network (moved to the CPU first), so the whole
# pipeline can be saved with `pickle` or `joblib` and served elsewhere.

# %%
import pickle

blob = pickle.dumps(search.best_estimator_)
restored = pickle.loads(blob)
same = (restored.predict(X_test) == search.predict(X_test)).all()
print(f"pickled pipeline: {len(blob) / 1e3:.0f} kB; same predictions after loading: {same}")

# %% [markdown]
# ## Next
#
# * [02_seed_claim](02_seed_claim.ipynb): the seed tutorial's experiment step by step, with
#   McNemar's test, bootstrap intervals and the accuracy-vs-C curve.
# * [03_transfer_and_layers](03_transfer_and_layers.ipynb): an MNIST-trained CNN as a frozen
#   extractor for other digits, and which layer to take features from.
# * [04_image_folder](04_image_folder.ipynb): image folders, the feature store and the
#   `featclf extract` command.
