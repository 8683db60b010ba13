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
# # An image folder: cats vs dogs, a feature store and `featclf extract`
#
# The workflow for your own images, on a cat-vs-dog folder this notebook draws itself
# (no download needed):
#
# 1. write `train/cat/cat.1.jpg`, `train/dog/dog.1.jpg`, ... and a `test/` folder,
# 2. list them with their labels: `image_files`,
# 3. train a small CNN on them with its softmax head (here, because pre-trained ImageNet
#    weights cannot be downloaded on this machine) and save it,
# 4. extract its features into a `FeatureStore`; a second run reuses every vector,
# 5. run the same extraction as a batch job: the `featclf extract` command,
# 6. classify with an SVM on the stored features, and export them (`featclf store
#    export`),
# 7. and at the end: the same code on Kaggle's dogs-vs-cats with ImageNet weights.

# %% tags=["parameters"]
# Parameters. QUICK = True runs the same steps on fewer images and epochs in seconds (the
# test suite runs every notebook that way); the saved outputs come from QUICK = False.
QUICK = False
N_TRAIN = 12 if QUICK else 100      # training images per class
N_TEST = 6 if QUICK else 50         # test images per class
EPOCHS = 1 if QUICK else 8
RUN_FULL = False                    # True: the Kaggle dogs-vs-cats section (downloads)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

plt.rcParams.update({"figure.dpi": 80, "figure.figsize": (6.4, 3.6), "axes.grid": True,
                     "grid.alpha": 0.3})
pd.set_option("display.precision", 4)

# %% [markdown]
# ## 1. A folder of cats and dogs
#
# Cartoon animals drawn with PIL: "cats" have pointy ears, stripes and whiskers, "dogs"
# floppy ears, spots and a nose. Both come in the same fur colours, at random positions,
# sizes and rotations, on random backgrounds, with pixel noise. They are saved as JPEGs in
# the torchvision `ImageFolder` layout with Kaggle-style file names.

# %%
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


# %%
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

# %% [markdown]
# ## 2. `image_files`: paths and labels
#
# `image_files(folder)` finds the images and reads the labels off the layout: class
# subfolders (`train/cat/...`), or, in a flat folder, the file name before its first `.`
# (Kaggle's `cat.123.jpg`). Every featclf estimator and command takes the result as `X`;
# `.labels` is `y`.

# %%
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

# %% [markdown]
# ## 3. A CNN trained on the folder
#
# With internet access this step would be a download: an ImageNet-trained ResNet (section
# 7). Here a ResNet-18 is trained from random weights (`weights="random"`: a torchvision
# name otherwise means its pretrained weights) on the training folder, on 32x32 RGB
# inputs (`ImagePreprocess`: resize, channels, normalisation), and saved as a featclf
# checkpoint: a state dict plus metadata naming the architecture and its preprocessing,
# loadable with `torch.load(..., weights_only=True)`.

# %%
import time

from featclf import DeepFeatureExtractor, FeatureStore, SoftmaxClassifier
from featclf.data import ImagePreprocess

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
started = time.perf_counter()
cnn = SoftmaxClassifier("resnet18", weights="random",  # offline here: no ImageNet weights
                        preprocess=ImagePreprocess(32, 3, IMAGENET_MEAN, IMAGENET_STD),
                        optimizer="adam", lr=1e-3, batch_size=20, epochs=EPOCHS,
                        validation_fraction=0.0, random_state=0)
cnn.fit(train, train.labels)
CNN_PATH = cnn.save(WORK / "cats-dogs-resnet18.pt")
print(f"trained {EPOCHS} epochs in {time.perf_counter() - started:.0f} s; saved "
      f"{CNN_PATH.name} ({CNN_PATH.stat().st_size / 1e6:.0f} MB)")
softmax_pred = cnn.predict(test)
print(f"softmax head, test accuracy: {(softmax_pred == test.labels).mean():.3f}")

# %% [markdown]
# ## 4. Features into a `FeatureStore`
#
# A store is a directory of feature vectors keyed by everything that decides them: the
# network's weights, the layer, pooling, preprocessing, precision, and each image's content
# (a hash of the file's bytes; a renamed or moved file is still found). The first
# extraction computes every vector; the second reads all of them back and never runs the
# network.

# %%
store = FeatureStore(WORK / "features")
extractor = DeepFeatureExtractor(CNN_PATH, store=store).fit()
for attempt in ("first run", "second run"):
    result = extractor.extract(train)
    print(f"{attempt}: {result.features.shape} features, {result.n_computed} computed, "
          f"{result.n_reused} read from the store, {result.seconds:.2f} s")

# %% [markdown]
# ## 5. The same job from the shell: `featclf extract`
#
# `featclf extract` is the batch version: it streams a folder, or a CSV of `path,label`
# lines, through the network into the store, shard by shard, so a killed job resumes where
# it stopped, and ends with a summary. It keys vectors exactly as the Python extractor
# does. Given a CSV of both folders, it reuses the training images' vectors computed
# above, computes only the test images, and records every image's label in the store;
# the Python extractor then finds the test vectors there.

# %%
import subprocess
import sys


def featclf(*args):
    """Run the `featclf` command (of this notebook's Python) and print its output."""
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

# %% [markdown]
# ## 6. An SVM on the stored features
#
# The extractor with `store=` goes first in a pipeline; the grid search over `C` and the
# scoring on the test folder read every vector from the store. McNemar's test compares the
# SVM with the network's own softmax head on the same test images.

# %%
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

# %% [markdown]
# `featclf store export` writes one configuration's vectors, with each image's content
# digest, path and label (as `featclf extract` read them), to Parquet or NPZ, for any
# other tool:

# %%
featclf("store", "export", store.root, WORK / "vectors.parquet")
table = pd.read_parquet(WORK / "vectors.parquet")
table["path"] = table["path"].str.replace(str(WORK), "WORK", regex=False)
print(table.shape)
table.head(3)

# %%
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

# %% [markdown]
# ## 7. The same code on Kaggle's dogs-vs-cats, with ImageNet weights
#
# Download `train.zip` of [Dogs vs. Cats](https://www.kaggle.com/c/dogs-vs-cats) (25,000
# JPEGs named `cat.0.jpg` ... `dog.12499.jpg` in one folder) and unzip it. Then only the
# folder and the network change: `image_files` reads the labels from the file names, and
# `DeepFeatureExtractor("resnet50", weights="IMAGENET1K_V2")` is torchvision's ResNet-50
# with its ImageNet weights (downloaded once by torchvision), with featclf's preprocessing
# for it (shorter side resized to 256, centre crop 224, ImageNet mean and std) and without
# its 1000-class head: 2048 values per image. On a GPU, `device="auto"` uses it with bf16
# autocast.
#
# The cell below runs only with `RUN_FULL = True` (it downloads weights and needs the
# Kaggle folder); it is skipped otherwise.

# %%
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

# %% [markdown]
# Or as a batch job from the shell (resumable; `--engine ray` spreads it over a Ray
# cluster), then the vectors exported for other tools:
#
# ```bash
# featclf extract --model resnet50 --weights IMAGENET1K_V2 \
#     --images ~/data/dogs-vs-cats/train --store ~/data/dogs-vs-cats/features \
#     --batch-size 128 --num-workers 4
# featclf store info ~/data/dogs-vs-cats/features
# featclf store verify ~/data/dogs-vs-cats/features
# featclf store export ~/data/dogs-vs-cats/features dogs-vs-cats-resnet50.parquet
# ```
#
# Offline, save the weights once where you have internet, e.g.
# `torch.save(torchvision.models.resnet50(weights="IMAGENET1K_V2").state_dict(), "r50.pt")`,
# and pass `--weights r50.pt` (or `weights="r50.pt"`) instead.
