"""The layouts users' own photo collections come in, on real files each test writes with PIL.

Split folders (``train/``, ``val/``, ``test/``), ``--test-data``, CSV files with a header,
camera file names that are not labels, class counts checked before training, unreadable files
skipped with ``on_error="skip"``, and a report and summary that say which weights, split and
classes were used. Every ``compare`` here is tiny: lenet5 for one epoch on a few dozen
28-40 px images, one classifier, one C.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from imagefile_helpers import write_image

from featclf.cli import main
from featclf.cli._data import add_data_arguments, image_files_from_args
from featclf.compare import compare
from featclf.data import image_files
from featclf.model_selection import check_class_counts
from featclf.report import setup_summary, write_report

TINY = {"models": ["lenet5"], "classifiers": ["logistic"], "epochs": 1, "cv": 2,
        "c_grids": [1.0], "n_resamples": 50, "random_state": 0}  # fmt: skip
TINY_CLI = ["--model", "lenet5", "--classifier", "logistic", "--epochs", "1", "--cv", "2",
            "--quick"]  # fmt: skip


def _photo(path: Path, cls: str, i: int) -> Path:
    """A small RGB photo of a size that varies with ``i``; red for "cat", blue otherwise."""
    rng = np.random.default_rng(i + 100 * len(cls))
    array = rng.integers(0, 120, (28 + 3 * (i % 5), 32 + 2 * (i % 4), 3), dtype=np.uint8)
    array[..., 0 if cls == "cat" else 2] = 230
    return write_image(path, array)


def _split_folder(root: Path, parts=(("train", 6), ("test", 3)), classes=("cat", "dog")) -> Path:
    for part, n in parts:
        for cls in classes:
            for i in range(n):
                _photo(root / part / cls / f"{cls}_{part}_{i}.jpg", cls, i)
    return root


def _class_folder(root: Path, n: int = 6, classes=("cat", "dog")) -> Path:
    for cls in classes:
        for i in range(n):
            _photo(root / cls / f"{i:03d}.png", cls, i)
    return root


# --------------------------------------------------------------------------- split folders


def test_train_and_test_subfolders_are_the_collections_own_split(tmp_path):
    files = image_files(_split_folder(tmp_path / "photos"))
    assert files.layout == "folders"
    assert sorted(set(files.labels.tolist())) == ["cat", "dog"]  # not "train" and "test"
    for path, part, label in zip(files.paths, files.splits, files.labels):
        assert Path(path).parts[-3] == part and Path(path).parts[-2] == label


def test_val_valid_and_validation_folders_name_the_validation_part(tmp_path):
    for name in ("val", "valid", "validation"):
        root = _split_folder(tmp_path / name, parts=(("train", 2), (name, 1), ("test", 1)))
        files = image_files(root)
        assert sorted(set(files.splits)) == ["test", "train", "val"]
        assert files.splits.count("val") == 2


def test_flat_split_folders_take_their_labels_from_the_file_names(tmp_path):
    for part, n in (("train", 4), ("test", 2)):
        for cls in ("cat", "dog"):
            for i in range(n):
                _photo(tmp_path / part / f"{cls}.{i}.png", cls, i)
    files = image_files(tmp_path)
    assert files.layout == "names" and files.splits.count("test") == 4
    assert sorted(set(files.labels.tolist())) == ["cat", "dog"]


def test_an_image_outside_the_split_folders_is_refused_by_name(tmp_path):
    root = _split_folder(tmp_path / "photos", parts=(("train", 1), ("test", 1)))
    stray = _photo(root / "extra" / "cat" / "x.png", "cat", 0)
    with pytest.raises(ValueError, match=f"{stray}.*outside"):
        image_files(root)


def test_a_class_named_test_among_class_folders_stays_a_class(tmp_path):
    root = _class_folder(tmp_path / "photos", n=2, classes=("cat", "test"))
    files = image_files(root)
    assert files.splits is None and sorted(set(files.labels.tolist())) == ["cat", "test"]


def test_compare_tests_on_the_folders_test_images_and_says_so(tmp_path):
    root = _split_folder(tmp_path / "photos")
    comparison = compare(root, **TINY)
    files = image_files(root)
    parts = np.asarray(files.splits)
    assert np.array_equal(comparison.split.test, np.flatnonzero(parts == "test"))
    assert np.array_equal(comparison.split.train, np.flatnonzero(parts == "train"))
    assert comparison.results["n_test"].iloc[0] == 6
    paths = write_report(comparison, tmp_path / "report")
    text = paths["report.md"].read_text(encoding="utf-8")
    assert "- split: the folder's own train/ and test/ subfolders: 12 train / 6 test" in text


def test_compare_chooses_C_on_a_val_folder_and_tests_on_the_test_folder(tmp_path):
    root = _split_folder(tmp_path / "photos", parts=(("train", 4), ("val", 2), ("test", 2)))
    comparison = compare(root, **TINY)
    assert comparison.split.describe() == "8 train / 4 validation / 4 test"
    assert "on the validation part" in comparison.setup["C selection"]


def test_test_data_is_the_test_part_and_the_data_is_all_training(tmp_path):
    train = _class_folder(tmp_path / "mine", n=5)
    held_out = _class_folder(tmp_path / "holdout", n=2)
    comparison = compare(train, test_data=held_out, **TINY)
    assert comparison.split.describe() == "10 train / 4 test"
    assert comparison.results["n_test"].iloc[0] == 4
    assert f"those of {held_out} (test data) for testing" in comparison.setup["split"]
    with pytest.raises(ValueError, match="own test part"):
        compare(_split_folder(tmp_path / "split"), test_data=held_out, **TINY)


def test_cli_compare_test_data_prints_weights_split_and_classes(tmp_path, capsys):
    train = _class_folder(tmp_path / "mine", n=5)
    held_out = _class_folder(tmp_path / "holdout", n=2)
    out = tmp_path / "report"
    code = main(["compare", "--data", str(train), "--test-data", str(held_out), *TINY_CLI,
                 "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "weights: lenet5: trained by SoftmaxClassifier for 1 epochs from random weights" \
        in printed
    assert f"split: the data's images for training, those of {held_out} (test data)" in printed
    assert "classes: cat 5 train / 2 test; dog 5 train / 2 test (2 classes)" in printed
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "random weights" in report and "cat 5 train / 2 test" in report


# --------------------------------------------------------------------------- CSV files


def _csv_photos(root: Path, header: str, rows: list[tuple[str, str, str]]) -> Path:
    for name, cls, _ in rows:
        _photo(root / "img" / name, cls, len(name))
    lines = [header] + [",".join((f"img/{n}", c, s)) for n, c, s in rows]
    (root / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "labels.csv"


ROWS = [(f"{c}{i}.png", c, "test" if i >= 4 else "train") for c in ("cat", "dog")
        for i in range(6)]  # fmt: skip


def test_csv_header_is_never_an_image_path_and_names_the_columns(tmp_path):
    csv_file = _csv_photos(tmp_path, "filename,class,split", ROWS)
    files = image_files(csv_file)
    assert len(files) == len(ROWS) and not any(p.endswith("filename") for p in files.paths)
    assert files.paths[0] == str(tmp_path / "img" / "cat0.png")  # relative to the CSV's folder
    assert files.labels.tolist() == [c for _, c, _ in ROWS]
    assert files.splits == [s for _, _, s in ROWS]


def test_csv_columns_named_by_the_user_in_any_order(tmp_path):
    rows = [(n, c, s) for n, c, s in ROWS]
    csv_file = _csv_photos(tmp_path, "picture,kind,subset", rows)
    # Reorder the columns: subset first.
    lines = csv_file.read_text().splitlines()
    swapped = [",".join([r.split(",")[2], r.split(",")[1], r.split(",")[0]]) for r in lines]
    csv_file.write_text("\n".join(swapped) + "\n")
    files = image_files(csv_file, path_column="picture", label_column="kind",
                        split_column="subset")  # fmt: skip
    assert files.labels.tolist() == [c for _, c, _ in ROWS]
    assert files.splits == [s for _, _, s in ROWS]
    with pytest.raises(ValueError, match="label_column='species' is not a column"):
        image_files(csv_file, path_column="picture", label_column="species")


def test_headerless_csv_still_reads_path_label_lines(tmp_path):
    csv_file = _csv_photos(tmp_path, "", ROWS)
    csv_file.write_text("\n".join(f"img/{n},{c}" for n, c, _ in ROWS) + "\n")
    files = image_files(csv_file)
    assert len(files) == len(ROWS) and files.splits is None
    assert files.labels.tolist() == [c for _, c, _ in ROWS]


def test_cli_data_flags_read_a_csv_with_its_own_column_names(tmp_path):
    import argparse

    csv_file = _csv_photos(tmp_path, "picture,kind,subset", ROWS)
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    args = parser.parse_args(["--path-column", "picture", "--label-column", "kind",
                              "--split-column", "subset"])  # fmt: skip
    files = image_files_from_args(args, csv_file)
    assert files.labels.tolist() == [c for _, c, _ in ROWS]
    assert files.splits.count("test") == 4
    with pytest.raises(ValueError, match="--path-column applies to a CSV file"):
        image_files_from_args(args, tmp_path / "img")


def test_cli_compare_uses_a_csv_split_column(tmp_path, capsys):
    csv_file = _csv_photos(tmp_path, "picture,kind,subset", ROWS)
    code = main(["compare", "--data", str(csv_file), "--path-column", "picture",
                 "--label-column", "kind", "--split-column", "subset", *TINY_CLI,
                 "--out", str(tmp_path / "report")])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert "split: the CSV file's own split column: 8 train / 4 test" in printed


# --------------------------------------------------------------------------- file-name labels


CAMERA = ["IMG_0001.jpg", "IMG_0002.jpg", "DSC_0002.jpg", "DSC_0107.jpg",
          "photo-2024-05-01.jpg", "PXL_20240501_101010.jpg"]  # fmt: skip


def test_camera_file_names_are_not_classes(tmp_path):
    for i, name in enumerate(CAMERA):
        _photo(tmp_path / "holiday" / name, "cat", i)
    files = image_files(tmp_path / "holiday")
    assert files.labels is None
    assert files.unlabelled_reason == ("the file-name prefixes DSC, IMG, PXL, photo look like "
                                       "camera names, not classes")
    with pytest.raises(ValueError) as caught:
        compare(tmp_path / "holiday", **TINY)
    assert ("the file-name prefixes DSC, IMG, PXL, photo look like camera names, not classes; "
            "put each class in its own subfolder or pass a CSV with labels") in str(caught.value)
    # Asked for explicitly, names are what the user said.
    assert image_files(tmp_path / "holiday", labels="names").labels.tolist()[:2] == ["DSC"] * 2


def test_names_where_almost_every_file_is_its_own_class_are_refused(tmp_path):
    for i, name in enumerate(["alps_1.jpg", "beach_1.jpg", "city_1.jpg", "dunes_1.jpg",
                              "alps_2.jpg"]):  # fmt: skip
        _photo(tmp_path / "trip" / name, "cat", i)
    files = image_files(tmp_path / "trip")
    assert files.labels is None
    assert "3 of the 5 files would be a class of their own" in files.unlabelled_reason


def test_date_names_are_not_classes_but_kaggle_names_are(tmp_path):
    for i in range(4):
        _photo(tmp_path / "phone" / f"2024050{i}_1200{i}.jpg", "cat", i)
        _photo(tmp_path / "kaggle" / f"{'cat' if i % 2 else 'dog'}.{i}.jpg", "cat", i)
    assert "dates or long numbers" in image_files(tmp_path / "phone").unlabelled_reason
    kaggle = image_files(tmp_path / "kaggle")
    assert kaggle.layout == "names" and kaggle.labels.tolist() == ["cat", "cat", "dog", "dog"]


# --------------------------------------------------------------------------- class counts


def test_check_class_counts_names_the_class_that_is_short():
    assert check_class_counts(["b", "a", "b", "a"]) == {"a": 2, "b": 2}
    with pytest.raises(ValueError, match="needs at least 2 images of each class; class 'b' has 1"):
        check_class_counts(["a", "a", "b"])
    with pytest.raises(ValueError, match="at least two classes; every image \\(3\\) is of class"):
        check_class_counts([7, 7, 7])
    with pytest.raises(ValueError, match="class 'a' has 2"):
        check_class_counts(["a", "a", "b", "b", "b"], min_per_class=3, what="testing")


def test_one_class_is_refused_before_any_training(tmp_path):
    root = _class_folder(tmp_path / "cats", n=6, classes=("cat",))
    lines: list[str] = []
    with pytest.raises(ValueError, match="two classes; every image \\(6\\) is of class 'cat'"):
        compare(root, progress=True, log=lines.append, **TINY)
    assert not any("training" in line for line in lines)


def test_too_few_images_of_a_class_for_cross_validation_is_refused_before_training(tmp_path):
    root = _split_folder(tmp_path / "photos", parts=(("train", 3), ("test", 1)))
    (root / "train" / "dog" / "dog_train_1.jpg").unlink()
    (root / "train" / "dog" / "dog_train_2.jpg").unlink()
    lines: list[str] = []
    with pytest.raises(ValueError, match="training \\(2-fold cross-validation chooses C\\) needs "
                                         "at least 2 images of each class; class 'dog' has 1"):
        compare(root, progress=True, log=lines.append, **TINY)
    assert not any("training the softmax network" in line for line in lines)


def test_a_test_class_without_training_images_is_refused_before_training(tmp_path):
    root = _split_folder(tmp_path / "photos", parts=(("train", 2), ("test", 1)))
    _photo(root / "test" / "eel" / "eel_0.jpg", "eel", 0)
    with pytest.raises(ValueError, match="class 'eel' has test images but no training images"):
        compare(root, **TINY)


def test_class_counts_are_logged_before_training_and_reported(tmp_path):
    root = _class_folder(tmp_path / "photos", n=10, classes=("cat", "dog", "eel"))
    lines: list[str] = []
    comparison = compare(root, progress=True, log=lines.append, **TINY)
    counts = next(i for i, line in enumerate(lines) if "images per class" in line)
    training = next(i for i, line in enumerate(lines) if "training the softmax" in line)
    assert counts < training
    assert lines[counts].endswith("images per class (train / test): cat 8/2, dog 8/2, eel 8/2")
    text = write_report(comparison, tmp_path / "r")["report.md"].read_text(encoding="utf-8")
    assert "- classes: cat 8 train / 2 test; dog 8 train / 2 test; eel 8 train / 2 test " \
           "(3 classes)" in text


# --------------------------------------------------------------------------- unreadable files


def _with_broken_file(root: Path) -> Path:
    broken = root / "train" / "cat" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a JPEG")
    return broken


def test_cli_compare_says_how_to_skip_a_broken_file_in_cli_words(tmp_path, capsys):
    root = _split_folder(tmp_path / "photos")
    broken = _with_broken_file(root)
    code = main(["compare", "--data", str(root), *TINY_CLI, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 1
    assert str(broken) in err and "--on-error skip" in err and "on_error=" not in err


def test_on_error_skip_leaves_the_broken_file_out_and_lists_it(tmp_path, capsys):
    root = _split_folder(tmp_path / "photos")
    broken = _with_broken_file(root)
    comparison = compare(root, on_error="skip", **TINY)
    assert [path for path, _ in comparison.skipped] == [str(broken)]
    assert comparison.split.describe() == "12 train / 6 test"
    assert any(line.startswith("skipped: 1 unreadable") for line in setup_summary(comparison))
    out = tmp_path / "r"
    code = main(["compare", "--data", str(root), "--on-error", "skip", *TINY_CLI,
                 "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and f"  {broken} (" in printed
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Skipped images" in report and f"- {broken}: " in report
    assert "--on-error skip" in report


# --------------------------------------------------------------------------- the command


def test_compare_command_module_imports_neither_torch_nor_sklearn():
    code = ("import sys, featclf.cli.compare_cmd as m; "
            "print(sorted(n for n in ('torch', 'sklearn') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert out.stdout.strip() == "[]"


def test_compare_command_offers_exactly_the_registrys_classifiers():
    from featclf.cli.compare_cmd import CLASSIFIER_NAMES
    from featclf.pipelines import CLASSIFIERS

    assert CLASSIFIER_NAMES == CLASSIFIERS


def test_compare_help_has_no_tutorial_jargon(capsys):
    try:
        main(["compare", "--help"])
    except SystemExit:  # argparse's exit, when main lets it through
        pass
    text = capsys.readouterr().out
    assert "seed001" not in text and "seed 001" not in text and "seed tutorial" not in text
    assert "--test-data" in text and "--on-error" in text and "--label-column" in text
