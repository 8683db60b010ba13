"""The report's quality sections: per-class table, normalised confusions, training, calibration."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import classification_report, confusion_matrix

from featclf.compare import compare
from featclf.comparison import Comparison, ResultKey
from featclf.data import load_mnist5k
from featclf.report import write_report
from featclf.report._plots import _confusion_figure
from featclf.report._quality import (
    calibration_table,
    expected_calibration_error,
    training_figure,
)
from featclf.report._tables import _prepare


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real short comparison (lenet5, 2 epochs, 300 MNIST digits across the classes) and its
    report."""
    X, y = load_mnist5k(return_X_y=True)
    idx = np.concatenate([np.flatnonzero(y == c)[:30] for c in range(10)])
    comparison = compare(
        (X[idx], y[idx]), models=["lenet5"], epochs=2, cv=2,
        classifiers=["linear_svm", "logistic"],
        c_grids={"linear_svm": [0.01, 1.0], "logistic": [0.1, 1.0]},
        n_resamples=200, random_state=0,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("sections")
    return comparison, out, write_report(comparison, out)


def _markdown_tables(text: str, heading: str) -> list[pd.DataFrame]:
    """The Markdown tables of the section under ``## heading``, as string DataFrames."""
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    tables = []
    for block in section.split("\n\n"):
        lines = [ln for ln in block.strip().splitlines() if ln.startswith("|")]
        if len(lines) < 3:
            continue
        rows = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines]
        tables.append(pd.DataFrame(rows[2:], columns=rows[0]))
    return tables


def test_per_class_table_is_sklearns_classification_report(run):
    comparison, _, paths = run
    text = paths["report.md"].read_text(encoding="utf-8")
    (table,) = _markdown_tables(text, "Per class")  # one model, one layer
    names = {"softmax": "softmax head", "linear_svm": "linear SVM", "logistic": "logistic"}
    classes = [str(c) for c in comparison.classes]
    assert list(table["class"]) == [*classes, "macro avg", "weighted avg"]
    checked = 0
    for key, pred in comparison.predictions.items():
        report = classification_report(comparison.y_true, pred, output_dict=True,
                                       zero_division=0)  # fmt: skip
        label = [c for c in table.columns if c.endswith(" F1") and
                 c.lower().startswith(names[key.classifier].lower())]  # fmt: skip
        assert len(label) == 1, table.columns
        prefix = label[0][: -len(" F1")]
        for i, cls in enumerate([*classes, "macro avg", "weighted avg"]):
            for metric, short in (("precision", "P"), ("recall", "R"), ("f1-score", "F1")):
                assert float(table[f"{prefix} {short}"][i]) == pytest.approx(
                    report[cls][metric], abs=5e-4
                )
            assert int(table["support"][i]) == report[cls]["support"]
            checked += 1
    assert checked == 3 * 12


def test_confusion_matrices_are_row_normalised(run):
    comparison, _, paths = run
    df = _prepare(comparison.results)
    figure, matrices = _confusion_figure(df, comparison, "lenet5", "penultimate")
    assert len(matrices) == 2
    softmax = comparison.predictions["lenet5", "penultimate", "softmax"]
    expected = confusion_matrix(comparison.y_true, softmax, normalize="true")
    np.testing.assert_allclose(matrices[0], expected)
    for matrix, ax in zip(matrices, figure.axes):
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
        # What the panel shows is that matrix, not the counts.
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), matrix)
    with Image.open(paths["confusion_lenet5_penultimate.png"]) as image:
        image.verify()


def _assert_lines_are(figure, histories):
    """The figure's loss and accuracy panels draw exactly the histories' recorded values."""
    names = {"softmax": "softmax head", "softmax_finetune": "fine-tuned softmax network"}
    loss_ax, acc_ax = figure.axes[:2]
    lines = {(what, line.get_label()): line
             for what, ax in (("loss", loss_ax), ("accuracy", acc_ax))
             for line in ax.get_lines()}  # fmt: skip
    expected = set()
    for baseline, history in histories.items():
        for what in ("loss", "accuracy"):
            for split, word in (("train", "training"), ("val", "validation")):
                values = history[f"{split}_{what}"].to_numpy(np.float64)
                keep = np.isfinite(values)
                if not keep.any():
                    continue
                expected.add((what, f"{names[baseline]}, {word}"))
                line = lines[what, f"{names[baseline]}, {word}"]
                np.testing.assert_allclose(line.get_xdata(), history["epoch"][keep])
                np.testing.assert_allclose(line.get_ydata(), values[keep])
    assert set(lines) == expected


def test_training_curves_plot_the_history(run):
    comparison, out, paths = run
    history = comparison.histories["lenet5", "softmax"]
    assert paths["training_lenet5.png"] == out / "training_lenet5.png"
    with Image.open(paths["training_lenet5.png"]) as image:
        assert image.size[0] > 600
    _assert_lines_are(training_figure("lenet5", {"softmax": history}), {"softmax": history})
    # With a validation split, and a fine-tuned network beside the one trained from scratch:
    # both splits of both networks are drawn, epochs without a validation value left out.
    val = history.assign(val_loss=history["train_loss"] + 0.1,
                         val_accuracy=history["train_accuracy"] - 0.05)  # fmt: skip
    val.loc[0, "val_loss"] = np.nan
    finetune = val.assign(train_loss=val["train_loss"] / 2)
    both = {"softmax": val, "softmax_finetune": finetune}
    _assert_lines_are(training_figure("lenet5", both), both)
    page = paths["report.html"].read_text(encoding="utf-8")
    data = base64.b64encode(paths["training_lenet5.png"].read_bytes()).decode("ascii")
    assert f'src="data:image/png;base64,{data}"' in page


def test_ece_of_a_tiny_hand_computed_example():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    conf = [0.95, 0.92, 0.55, 0.45, 0.15, 0.05]
    # Bins of 0.1: (0.9, 1] holds 0.95 (right) and 0.92 (wrong): |0.5 - 0.935| = 0.435;
    # (0.5, 0.6] holds 0.55 (right): 0.45; (0.4, 0.5] holds 0.45 (right): 0.55;
    # (0.1, 0.2] holds 0.15 (right): 0.85; [0, 0.1] holds 0.05 (wrong): 0.05.
    expected = (2 * 0.435 + 0.45 + 0.55 + 0.85 + 0.05) / 6
    assert expected_calibration_error(y_true, y_pred, conf) == pytest.approx(expected)
    # Two bins: [0, 0.5] holds 0.45, 0.15, 0.05 (2 of 3 right, mean 0.2167); (0.5, 1] holds
    # 0.95, 0.92, 0.55 (2 of 3 right, mean 0.8067).
    two = (3 * abs(2 / 3 - 0.65 / 3) + 3 * abs(2 / 3 - 2.42 / 3)) / 6
    assert expected_calibration_error(y_true, y_pred, conf, n_bins=2) == pytest.approx(two)
    assert expected_calibration_error([1, 1], [1, 1], [1.0, 1.0]) == 0.0


def test_calibration_section_lists_only_probabilistic_classifiers(run):
    comparison, _, paths = run
    df = _prepare(comparison.results)
    table = calibration_table(df, comparison)
    kinds = {key.classifier: kind for key, kind in comparison.score_kinds.items()}
    assert kinds["linear_svm"] == "decision"
    assert set(table["classifier"]) == {"softmax", "logistic"}
    for _, row in table.iterrows():
        key = ResultKey("lenet5", "penultimate", row["classifier"])
        conf = comparison.scores[key]
        correct = comparison.predictions[key] == comparison.y_true
        ece = 0.0  # written out bin by bin, edges compared directly
        for lo, hi in zip(np.linspace(0, 1, 11)[:-1], np.linspace(0, 1, 11)[1:]):
            inside = (conf > lo) & (conf <= hi) | ((lo == 0) & (conf == 0))
            if inside.any():
                ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
        assert row["ece"] == pytest.approx(ece)
        assert row["accuracy"] == pytest.approx(correct.mean())
    text = paths["report.md"].read_text(encoding="utf-8")
    (shown,) = _markdown_tables(text, "Calibration")
    assert list(shown["classifier"]) == ["softmax head", "logistic regression"]
    np.testing.assert_allclose(shown["top-label ECE"].astype(float), table["ece"], atol=5e-4)
    assert "reliability_lenet5_penultimate.png" in paths
    page = paths["report.html"].read_text(encoding="utf-8")
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == sum(name.endswith(".png") for name in paths)


def test_report_without_scores_or_histories_has_no_calibration_or_training(tmp_path):
    results = pd.DataFrame({
        "model": "m", "layer": "penultimate", "classifier": ["softmax", "linear_svm"],
        "C": [None, 1.0], "selected": True, "accuracy": [0.5, 0.75]})  # fmt: skip
    y_true = np.array(["a", "a", "b", "b"])
    preds = {("m", "penultimate", "softmax"): np.array(["a", "b", "b", "a"]),
             ("m", "penultimate", "linear_svm"): np.array(["a", "a", "b", "a"])}  # fmt: skip
    comparison = Comparison(results, predictions=preds, y_true=y_true,
                            classes=np.array(["a", "b"]))  # fmt: skip
    paths = write_report(comparison, tmp_path)
    assert not [n for n in paths if n.startswith(("training_", "reliability_"))]
    text = paths["report.md"].read_text(encoding="utf-8")
    assert "## Calibration" not in text
    (table,) = _markdown_tables(text, "Per class")
    assert list(table["class"]) == ["a", "b", "macro avg", "weighted avg"]
    # linear SVM: a is recalled 2/2 with precision 2/3; b recalled 1/2 with precision 1.
    assert list(table["linear SVM R"]) == ["1.000", "0.500", "0.750", "0.750"]
    assert list(table["linear SVM P"]) == ["0.667", "1.000", "0.833", "0.833"]


def _gallery_comparison(tmp_path):
    """Eight one-grey-level image files (file i has value 10 i + 5) and two classifiers."""
    paths = []
    for i in range(8):
        path = tmp_path / "images" / f"img{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((16, 16), 10 * i + 5, dtype=np.uint8)).save(path)
        paths.append(str(path))
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    softmax = np.array([0, 1, 1, 0, 1, 0, 1, 1])  # wrong: 1, 2, 5
    svm = np.array([0, 0, 1, 0, 1, 1, 0, 1])  # wrong: 2, 6
    results = pd.DataFrame({
        "model": "m", "layer": "penultimate", "classifier": ["softmax", "linear_svm"],
        "C": [None, 1.0], "selected": True, "accuracy": [5 / 8, 6 / 8],
        "cv_accuracy": [None, 0.7]})  # fmt: skip
    keys = [ResultKey("m", "penultimate", c) for c in ("softmax", "linear_svm")]
    return Comparison(
        results, predictions=dict(zip(keys, (softmax, svm))), y_true=y_true,
        classes=np.array([0, 1]), images=paths,
        scores=dict(zip(keys, ([.9, .6, .95, .8, .7, .85, .5, .9],
                               [1.0, 2.0, 0.3, 1.0, 1.0, 1.0, 1.5, 1.0]))),
        score_kinds=dict(zip(keys, ("probability", "decision"))),
    )  # fmt: skip


def test_gallery_shows_confident_mistakes_and_disagreements(tmp_path):
    paths = write_report(_gallery_comparison(tmp_path), tmp_path / "out")
    page = paths["report.html"].read_text(encoding="utf-8")
    shown = {}
    for heading, gallery in re.findall(r"<h3>([^<]*)</h3>\s*<div class=\"gallery\">(.*?)</div>",
                                       page, flags=re.S):  # fmt: skip
        files = []
        for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', gallery):
            with Image.open(io.BytesIO(base64.b64decode(data))) as thumb:
                files.append((int(np.asarray(thumb).mean()) - 5) // 10)  # which file it is
        shown[heading.split(": ", 1)[1].split(" (")[0]] = files
    assert shown == {
        "most confidently wrong, softmax head": [2, 5, 1],  # probabilities .95, .85, .6
        "most confidently wrong, linear SVM": [6, 2],  # decision scores 1.5, 0.3
        "softmax head right, linear SVM wrong": [6],
        "linear SVM right, softmax head wrong": [1, 5],
    }
    text = paths["report.md"].read_text(encoding="utf-8")
    assert "- img2.png: true 0; softmax head: 1, linear SVM: 1" in text
    # The thumbnails are in the page only: no extra files, and the PNG plots are all embedded.
    assert not [n for n in paths if n.startswith(("thumb", "gallery"))]


def test_no_gallery_when_images_are_row_positions(run):
    _, _, paths = run
    assert "## Test images" not in paths["report.md"].read_text(encoding="utf-8")
