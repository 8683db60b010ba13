"""Specification of featclf.report: the comparison report written from a results table."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from featclf.comparison import Comparison, ResultKey
from featclf.errors import cli_messages
from featclf.pipelines import c_grid
from featclf.report import SUMMARY_COLUMNS, setup_summary, summary_table, verdict, write_report

CLASSES = list(range(10))
N_TEST = 200


@dataclass
class Outcome:
    """What one model/layer scored: the softmax head and the best SVM (the linear SVM)."""

    softmax: float
    svm: float
    diff_ci: tuple[float, float]
    mcnemar_p: float


def noisy(y_true: np.ndarray, accuracy: float, seed: int) -> list[int]:
    """Predictions that are right on a fraction ``accuracy`` of the samples."""
    rng = np.random.default_rng(seed)
    pred = y_true.copy()
    wrong = rng.choice(len(y_true), size=round((1 - accuracy) * len(y_true)), replace=False)
    pred[wrong] = (pred[wrong] + rng.integers(1, 10, size=wrong.size)) % 10
    return pred.tolist()


def make_results(
    outcomes: dict[str, Outcome], *, layer: str = "penultimate", predictions: bool = True
) -> Comparison:
    """A Comparison shaped like featclf.compare.compare's, for the given models."""
    y_true = np.arange(N_TEST) % 10
    rows, preds = [], {}
    common = {"dataset": "mnist5k", "layer": layer, "n_train": 800, "n_test": N_TEST}
    nan = float("nan")
    for m, (model, outcome) in enumerate(outcomes.items()):
        softmax = {
            **common,
            "model": model,
            "classifier": "softmax",
            "C": nan,
            "selected": True,
            "cv_accuracy": nan,
            "accuracy": outcome.softmax,
            "accuracy_ci_low": outcome.softmax - 0.02,
            "accuracy_ci_high": outcome.softmax + 0.02,
            "macro_f1": outcome.softmax - 0.001,
            "log_loss": 0.15,
            "fit_time_s": 42.0,
            "predict_time_s": 0.5,
            "extract_time_s": nan,
            "extract_images_per_s": nan,
            "n_features": 84,
            "diff_vs_softmax": nan,
            "diff_ci_low": nan,
            "diff_ci_high": nan,
            "mcnemar_b": nan,
            "mcnemar_c": nan,
            "mcnemar_p": nan,
        }
        rows.append(softmax)
        preds[ResultKey(model, layer, "softmax")] = noisy(y_true, outcome.softmax, seed=m)
        # The linear SVM is the best SVM; the RBF SVM and logistic regression trail it.
        for k, (classifier, best) in enumerate(
            [
                ("linear_svm", outcome.svm),
                ("rbf_svm", outcome.svm - 0.01),
                ("logistic", outcome.svm - 0.02),
            ]
        ):
            grid = c_grid(classifier)
            chosen = len(grid) // 2
            for i, C in enumerate(grid):
                accuracy = best - 0.01 * abs(i - chosen)
                diff = accuracy - outcome.softmax
                low, high = outcome.diff_ci if i == chosen else (diff - 0.01, diff + 0.01)
                rows.append(
                    {
                        **softmax,
                        "classifier": classifier,
                        "C": C,
                        "selected": i == chosen,
                        "cv_accuracy": accuracy - 0.003,
                        "accuracy": accuracy,
                        "accuracy_ci_low": accuracy - 0.02,
                        "accuracy_ci_high": accuracy + 0.02,
                        "macro_f1": accuracy - 0.002,
                        "log_loss": 0.2 if classifier == "logistic" else nan,
                        "fit_time_s": 0.25 * (k + 1),
                        "predict_time_s": 0.01,
                        "extract_time_s": 3.5,
                        "extract_images_per_s": 1000 / 3.5,
                        "diff_vs_softmax": diff,
                        "diff_ci_low": low,
                        "diff_ci_high": high,
                        "mcnemar_b": 12,
                        "mcnemar_c": 9,
                        "mcnemar_p": outcome.mcnemar_p if i == chosen else 0.5,
                    }
                )
            preds[ResultKey(model, layer, classifier)] = noisy(y_true, best, seed=10 * m + k + 1)
    setup = {
        "dataset": "mnist5k",
        "models": list(outcomes),
        "layers": [layer],
        "split": "stratified 80/20",
        "random_state": 0,
        "epochs": 15,
    }
    return Comparison(pd.DataFrame(rows), predictions=preds if predictions else {},
                      y_true=y_true, classes=np.asarray(CLASSES), setup=setup)  # fmt: skip


NOT_SIGNIFICANT = Outcome(softmax=0.958, svm=0.963, diff_ci=(-0.004, 0.014), mcnemar_p=0.41)
SIGNIFICANTLY_WORSE = Outcome(softmax=0.95, svm=0.912, diff_ci=(-0.052, -0.024), mcnemar_p=0.0021)
SIGNIFICANTLY_BETTER = Outcome(softmax=0.9, svm=0.931, diff_ci=(0.012, 0.05), mcnemar_p=0.0004)


@pytest.fixture(scope="module")
def two_model_report(tmp_path_factory):
    results = make_results({"lenet5": NOT_SIGNIFICANT, "seedcnn": SIGNIFICANTLY_WORSE})
    out = tmp_path_factory.mktemp("report") / "nested" / "out"
    return results, out, write_report(results, out)


EXPECTED_FILES = {
    "results.csv",
    "predictions.csv",
    "predictions.parquet",
    "report.md",
    "report.html",
    "accuracy.png",
    "c_curve.png",
    "confusion_lenet5_penultimate.png",
    "confusion_seedcnn_penultimate.png",
}


def test_write_report_creates_every_file(two_model_report):
    _, out, paths = two_model_report
    assert set(paths) == EXPECTED_FILES
    assert {p.name for p in out.iterdir()} == EXPECTED_FILES
    for name, path in paths.items():
        assert path == out / name
        assert path.stat().st_size > 0


def test_no_matplotlib_figures_are_left_open(two_model_report):
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []


def test_every_png_is_a_valid_image(two_model_report):
    _, _, paths = two_model_report
    for name in (n for n in paths if n.endswith(".png")):
        with Image.open(paths[name]) as image:
            image.verify()
        with Image.open(paths[name]) as image:
            assert image.format == "PNG"
            assert image.width > 200 and image.height > 200


def test_confusion_plot_has_two_panels_side_by_side(two_model_report):
    _, _, paths = two_model_report
    with Image.open(paths["confusion_lenet5_penultimate.png"]) as image:
        assert image.width > 1.5 * image.height


def test_html_is_self_contained_with_every_plot_embedded(two_model_report):
    _, _, paths = two_model_report
    page = paths["report.html"].read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == sum(name.endswith(".png") for name in paths)
    assert base64.b64decode(images[0]) == paths["accuracy.png"].read_bytes()
    assert 'src="accuracy.png"' not in page
    assert "<style>" in page and "<table" in page


def test_markdown_links_the_plots_next_to_it(two_model_report):
    _, _, paths = two_model_report
    text = paths["report.md"].read_text(encoding="utf-8")
    for name in (n for n in paths if n.endswith(".png")):
        assert f"]({name})" in text


def test_verdict_opens_the_report_and_calls_a_small_non_significant_test_inconclusive(
        two_model_report):
    _, _, paths = two_model_report
    paragraph = paths["report.md"].read_text(encoding="utf-8").split("\n\n")[1]
    assert paragraph.startswith(
        "On mnist5k, the linear SVM on lenet5's penultimate features (C=1, chosen among 2 SVMs "
        "by cross-validation accuracy, 0.960) reached 0.963 test accuracy vs 0.958 for the "
        "softmax head (difference +0.005, 95% CI [-0.004, +0.014]; McNemar p = 0.41): "
        "inconclusive — the 95% CI contains zero and McNemar's p is not below 0.05, and with "
        "200 test images a difference of 3 points cannot be detected; it would take about 914"
    )
    assert "matches" not in paragraph


def test_verdict_says_worse_when_the_interval_and_mcnemar_agree(two_model_report):
    _, _, paths = two_model_report
    paragraph = paths["report.md"].read_text(encoding="utf-8").split("\n\n")[1]
    assert (
        "reached 0.912 test accuracy vs 0.950 for the softmax head (difference -0.038, 95% CI "
        "[-0.052, -0.024]; McNemar p = 0.0021): the SVM is worse than the softmax head (the "
        "95% CI excludes zero and McNemar's p is below 0.05)."
    ) in paragraph
    html = paths["report.html"].read_text(encoding="utf-8")
    assert "the SVM is worse than the softmax head" in html


def test_verdict_says_better_when_the_interval_and_mcnemar_agree():
    text = verdict(make_results({"resnet18": SIGNIFICANTLY_BETTER}, layer="avgpool"))
    assert text == (
        "On mnist5k, the linear SVM on resnet18's avgpool features (C=1, chosen among 2 SVMs by "
        "cross-validation accuracy, 0.928) reached 0.931 test accuracy vs 0.900 for the "
        "softmax head (difference +0.031, 95% CI [+0.012, +0.050]; McNemar p < 0.001): the SVM "
        "is better than the softmax head (the 95% CI excludes zero and McNemar's p is below "
        "0.05)."
    )


def test_verdict_without_a_mcnemar_p_never_claims_a_difference():
    results = make_results({"lenet5": SIGNIFICANTLY_BETTER})
    results.results["mcnemar_p"] = np.nan
    text = verdict(results)
    assert "better" not in text and "McNemar p" not in text
    assert "inconclusive — the 95% CI excludes zero but no McNemar test was recorded" in text


def test_verdict_compares_the_svm_chosen_by_cross_validation_not_the_test_best():
    results = make_results({"lenet5": NOT_SIGNIFICANT})
    table = results.results
    rbf = table["selected"] & (table["classifier"] == "rbf_svm")
    table.loc[rbf, "accuracy"] = 0.99  # best on the test images, second by CV (0.95 < 0.96)
    text = verdict(results)
    assert text.startswith("On mnist5k, the linear SVM on lenet5's penultimate features (C=1, "
                           "chosen among 2 SVMs by cross-validation accuracy, 0.960)")
    assert "0.990" not in text


def test_markdown_table_shows_the_selected_rows_with_intervals(two_model_report):
    _, _, paths = two_model_report
    text = paths["report.md"].read_text(encoding="utf-8")
    assert "| Classifier | C | CV accuracy | Accuracy [95% CI] |" in text
    assert "| softmax head | — | — | 0.958 [0.938, 0.978] |" in text
    linear = next(line for line in text.splitlines() if line.startswith("| linear SVM | 1 |"))
    cells = [cell.strip() for cell in linear.strip("|").split("|")]
    assert cells[3:8] == ["0.963 [0.943, 0.983]", "0.961", "—", "+0.005 [-0.004, +0.014]", "0.41"]
    assert "| logistic regression | 1 |" in text and "| 0.200 |" in text  # its log-loss
    assert text.count("| linear SVM |") == 2  # one selected row per model, not the sweep
    assert "84 features per image; 800 training / 200 test images" in text
    assert "feature extraction 3.5 s (286 images/s)" in text


def test_setup_section_prints_the_config(two_model_report):
    _, _, paths = two_model_report
    text = paths["report.md"].read_text(encoding="utf-8")
    setup = text.split("## Setup")[1].split("## Results")[0]
    assert "- dataset: mnist5k" in setup
    assert "- models: lenet5, seedcnn" in setup
    assert "- epochs: 15" in setup
    assert "- classes (10): 0, 1, 2" in setup


def test_results_csv_round_trips(two_model_report):
    comparison, _, paths = two_model_report
    loaded = pd.read_csv(paths["results.csv"])
    assert list(loaded.columns) == list(comparison.results.columns)
    assert loaded["selected"].dtype == bool
    pd.testing.assert_frame_equal(loaded, comparison.results, check_dtype=False)


def test_missing_predictions_skip_the_confusion_plots(tmp_path):
    results = make_results({"lenet5": NOT_SIGNIFICANT}, predictions=False)
    paths = write_report(results, tmp_path)
    assert set(paths) == {"results.csv", "report.md", "report.html", "accuracy.png", "c_curve.png"}
    assert not list(tmp_path.glob("confusion_*.png"))


def test_a_bare_results_table_still_gives_a_report(tmp_path):
    results = pd.DataFrame(
        {
            "model": "m",
            "layer": "features.7",
            "classifier": ["softmax", "rbf_svm"],
            "accuracy": [0.5, 0.6],
        }
    )
    paths = write_report(Comparison(results), tmp_path, title="Tiny")
    assert set(paths) == {"results.csv", "report.md", "report.html", "accuracy.png"}
    text = paths["report.md"].read_text(encoding="utf-8")
    assert text.startswith("# Tiny\n")
    assert "(difference +0.100): no significance test is available." in text


def test_layer_names_are_made_safe_for_file_names(tmp_path):
    results = make_results({"resnet18": NOT_SIGNIFICANT}, layer="layer4/avgpool")
    paths = write_report(results, tmp_path)
    assert "confusion_resnet18_layer4-avgpool.png" in paths
    assert (tmp_path / "confusion_resnet18_layer4-avgpool.png").is_file()


def test_summary_table_lists_the_selected_rows_softmax_first():
    results = make_results({"lenet5": NOT_SIGNIFICANT, "seedcnn": SIGNIFICANTLY_WORSE})
    table = summary_table(results)
    assert list(table.columns) == list(SUMMARY_COLUMNS)
    assert len(table) == 8
    assert table["classifier"].tolist() == ["softmax", "linear_svm", "rbf_svm", "logistic"] * 2
    assert table["model"].tolist() == ["lenet5"] * 4 + ["seedcnn"] * 4
    assert table.loc[1, "accuracy"] == pytest.approx(0.963)
    assert table.loc[1, "C"] == 1.0


def test_several_datasets_in_one_report_are_refused(tmp_path):
    results = make_results({"lenet5": NOT_SIGNIFICANT})
    results.results.loc[0, "dataset"] = "digits"
    with pytest.raises(ValueError, match="one report per dataset"):
        write_report(results, tmp_path)


def test_a_table_without_the_required_columns_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['accuracy'\]"):
        write_report(Comparison(pd.DataFrame({"model": ["m"], "layer": ["l"],
                                              "classifier": ["x"]})), tmp_path)  # fmt: skip


def test_a_bare_table_is_refused_with_how_to_wrap_it(tmp_path):
    table = make_results({"lenet5": NOT_SIGNIFICANT}).results
    for call in (lambda: write_report(table, tmp_path), lambda: verdict(table),
                 lambda: summary_table(table)):  # fmt: skip
        with pytest.raises(TypeError, match=r"Comparison\(results\)"):
            call()


def test_several_layers_of_one_model_get_one_section_and_one_panel_each(tmp_path):
    first = make_results({"resnet18": NOT_SIGNIFICANT}, layer="layer3")
    second = make_results({"resnet18": SIGNIFICANTLY_BETTER}, layer="layer4")
    table = pd.concat([first.results, second.results], ignore_index=True)
    rbf = table["selected"] & (table["classifier"] == "rbf_svm")
    table["selected"] = table["selected"].astype(object).where(~rbf, None)
    results = Comparison(table, predictions={**first.predictions, **second.predictions},
                         y_true=first.y_true, classes=first.classes, setup=first.setup)
    paths = write_report(results, tmp_path)
    assert {"confusion_resnet18_layer3.png", "confusion_resnet18_layer4.png"} <= set(paths)
    text = paths["report.md"].read_text(encoding="utf-8")
    assert "### resnet18 — layer3" in text and "### resnet18 — layer4" in text
    assert "RBF SVM" not in text.split("## Results")[1].split("## Plots")[0]  # None: unselected
    paragraph = text.split("\n\n")[1]
    assert "resnet18's layer3 features" in paragraph and "resnet18's layer4 features" in paragraph


def _run_with_setup(**extra) -> Comparison:
    results = pd.DataFrame({"dataset": "photos", "model": "resnet18", "layer": "penultimate",
                            "classifier": ["softmax", "logistic"], "C": [None, 1.0],
                            "selected": True, "accuracy": [0.5, 0.6]})  # fmt: skip
    setup = {"dataset": "photos",
             "split": "the folder's own train/ and test/ subfolders: 8 train / 4 test",
             "classes": "cat 4 train / 2 test; dog 4 train / 2 test (2 classes)",
             "weights": {"resnet18": "random weights (seed 0), frozen"}}  # fmt: skip
    return Comparison(results, classes=np.array(["cat", "dog"]), setup=setup, **extra)


def test_report_says_weights_split_and_classes_in_words(tmp_path):
    text = write_report(_run_with_setup(), tmp_path)["report.md"].read_text(encoding="utf-8")
    setup = text.split("## Setup")[1].split("## Results")[0]
    assert "- weights: resnet18: random weights (seed 0), frozen" in setup
    assert "- split: the folder's own train/ and test/ subfolders: 8 train / 4 test" in setup
    assert "- classes: cat 4 train / 2 test; dog 4 train / 2 test (2 classes)" in setup
    assert "classes (2)" not in setup  # the counts replace the bare class list


def test_setup_summary_lists_weights_split_classes_and_each_skipped_file():
    comparison = _run_with_setup(skipped=(("/p/a.jpg", "truncated"), ("/p/b.png", "empty")))
    assert setup_summary(comparison) == [
        "weights: resnet18: random weights (seed 0), frozen",
        "split: the folder's own train/ and test/ subfolders: 8 train / 4 test",
        "classes: cat 4 train / 2 test; dog 4 train / 2 test (2 classes)",
        "skipped: 2 unreadable image files left out:",
        "  /p/a.jpg (truncated)",
        "  /p/b.png (empty)",
    ]


def test_skipped_files_get_a_section_naming_the_option_as_the_interface_does(tmp_path):
    comparison = _run_with_setup(skipped=(("/p/a.jpg", "truncated"),))
    text = write_report(comparison, tmp_path / "py")["report.md"].read_text(encoding="utf-8")
    assert "## Skipped images" in text and "- /p/a.jpg: truncated" in text
    assert "(on_error='skip')" in text
    with cli_messages():
        text = write_report(comparison, tmp_path / "cli")["report.md"].read_text(encoding="utf-8")
    assert "(--on-error skip)" in text
    no_skips = write_report(_run_with_setup(), tmp_path / "none")["report.md"]
    assert "Skipped images" not in no_skips.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- repeated splits


def test_repeated_splits_get_a_section_with_mean_sd_and_the_verdicts_spread(tmp_path,
                                                                           two_model_report):
    from featclf.report._repeats import repeats_table

    # Three splits whose verdicts differ: inconclusive (200 images), better, worse.
    splits = [make_results({"lenet5": outcome})
              for outcome in (NOT_SIGNIFICANT, SIGNIFICANTLY_BETTER, SIGNIFICANTLY_WORSE)]
    table = repeats_table(splits, [0, 1, 2])
    assert table.loc[table["compared"], "verdict"].tolist() == ["inconclusive", "better", "worse"]
    paths = write_report(splits[0], tmp_path, repeats=table)
    assert set(paths) == {*EXPECTED_FILES - {"confusion_seedcnn_penultimate.png"}, "repeats.csv"}
    pd.testing.assert_frame_equal(pd.read_csv(paths["repeats.csv"]), table, check_dtype=False)
    text = paths["report.md"].read_text(encoding="utf-8")
    softmax = [0.958, 0.9, 0.95]
    svm = [0.963, 0.931, 0.912]
    for name, values in (("softmax head", softmax), ("linear SVM", svm)):
        shown = f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"
        assert f"| lenet5 | penultimate | {name} | {shown} | {min(values):.4f} |" in text
    assert ("| lenet5 | penultimate | 1 | 1 | 0 | 1 | 3 | linear SVM (3×) |") in text
    assert ("The verdict above is the first split's. Over 3 seeded splits (seeds 0-2) it was "
            "better on 1, worse on 1 and inconclusive on 1 for lenet5's penultimate features "
            "(see Repeated splits).") in text
    # The section follows the results and precedes the per-class tables; the HTML has it too.
    assert text.index("## Results") < text.index("## Repeated splits") < text.index("## Per class")
    html = paths["report.html"].read_text(encoding="utf-8")
    assert "<h2>Repeated splits</h2>" in html and f"<td>{shown}</td>" in html
    assert "Repeated splits" not in two_model_report[2]["report.md"].read_text(encoding="utf-8")
    with pytest.raises(ValueError, match=r"repeats lacks the column\(s\) \['split'"):
        write_report(splits[0], tmp_path / "bad", repeats=table.drop(columns="split"))
