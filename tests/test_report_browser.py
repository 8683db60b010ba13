"""The HTML report in a real headless Chromium: nothing overflows or overlaps, every image decodes.

A real comparison on a folder of MNIST digit files (long file names, one unreadable file) writes
a report with every section and a gallery; ``tools/report_screenshot.py`` loads it at 1280 px
and as a 390 px phone and reads the layout from the DOM. A page broken on purpose shows that
each check does find its problem.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featclf.compare import compare
from featclf.data import load_mnist5k
from featclf.report import write_report

ROOT = Path(__file__).resolve().parents[1]


def _load_tool():
    """``tools/report_screenshot.py`` as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("report_screenshot",
                                                  ROOT / "tools" / "report_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


@pytest.fixture(scope="module")
def chromium() -> str:
    """The browser; skipped where it is missing, except in CI (``make test`` installs both)."""
    try:
        import playwright  # noqa: F401

        return tool.find_chromium()
    except (ImportError, FileNotFoundError) as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{error} (pip install -e '.[dev]' brings playwright; make chromium)")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A real report with a gallery: lenet5 (1 epoch) on 160 digit files in 10 class folders."""
    X, y = load_mnist5k(return_X_y=True)
    root = tmp_path_factory.mktemp("browser") / "digits"
    # Long unbreakable names: captions, the class list and the skipped-file list must wrap.
    for c in range(10):
        for k, i in enumerate(np.flatnonzero(y == c)[:16]):
            path = root / f"handwritten_digit_{c}" / f"scan_{c}_{k:02d}_{'x' * 48}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(X[i]).save(path)
    (root / "handwritten_digit_0" / f"damaged_{'y' * 60}.png").write_bytes(b"not a png")
    comparison = compare(
        str(root), models=["lenet5"], epochs=1, cv=2, classifiers=["linear_svm", "logistic"],
        c_grids={"linear_svm": [0.01, 1.0], "logistic": [0.1, 1.0]}, n_resamples=100,
        random_state=0, on_error="skip",
    )  # fmt: skip
    return write_report(comparison, root.parent / "report")["report.html"]


_BROKEN = """<!DOCTYPE html><html><head><style>
td { white-space: nowrap; } .pair { position: relative; height: 60px; }
.pair figure { position: absolute; margin: 0; width: 50px; height: 50px; background: #ccc; }
</style></head><body>
<table><tr><td>{wide}</td></tr></table>
<div class="pair"><figure style="left: 0"></figure><figure style="left: 30px"></figure></div>
<img src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAf" alt="cut short">
<img src="http://example.invalid/elsewhere.png" alt="remote">
</body></html>"""


@pytest.fixture(scope="module")
def checked(report, chromium, tmp_path_factory):
    """The report and a page broken on purpose, each at 1280 px and 390 px (one browser)."""
    broken = tmp_path_factory.mktemp("broken") / "broken.html"
    broken.write_text(_BROKEN.replace("{wide}", "a wide cell " * 30), encoding="utf-8")
    shots = report.parent / "shots"
    screenshots = {(0, 1280): shots / "desktop.png", (0, 390): shots / "phone.png"}
    return tool.check_pages([report, broken], (1280, 390), screenshots=screenshots,
                            chromium=chromium)  # fmt: skip


def test_report_renders_without_overflow_or_overlap(report, checked):
    page = report.read_text(encoding="utf-8")
    assert "<h2>Test images</h2>" in page and "<h2>Skipped images</h2>" in page
    desktop, phone = checked[0]
    n_images = page.count("<img ")
    n_thumbs = page.count('<figure class="thumb">')
    assert n_thumbs >= 8 and n_images == n_thumbs + page.count("<figure><img ")
    for check in (desktop, phone):
        assert check.problems == [], f"{check.width} px:\n" + "\n".join(check.problems)
        assert check.layout_width == check.width and check.scroll_width == check.width
        assert (check.images, check.gallery_thumbs) == (n_images, n_thumbs)
        assert check.tables == page.count("<table")
        with Image.open(check.screenshot) as shot:  # the whole page, not the first screen
            assert shot.size == (check.width, check.height)
    # The tables that are wider than a phone scroll inside their own box, not the page.
    assert phone.scrolling_tables >= 1
    assert desktop.height < phone.height


def test_checks_find_each_problem_of_a_broken_page(checked):
    desktop, phone = checked[1]
    problems = "\n".join(desktop.problems)
    assert desktop.scroll_width > 1280 and "scrolls sideways" in problems
    assert any(o.startswith("table") and "spans x" in o for o in desktop.overflows)
    assert [o for o in desktop.overlaps if "overlap by 20 x 50 px" in o] != []
    assert sorted(desktop.undecoded) == ['img "cut short"', 'img "remote"']
    assert desktop.requests == ["http://example.invalid/elsewhere.png"]
    # No viewport meta: a phone lays the page out 980 px wide and shrinks it.
    assert phone.layout_width == 980 and "laid out 980 px wide" in "\n".join(phone.problems)


def test_script_exits_1_on_problems_0_without_and_writes_the_screenshots(chromium, tmp_path,
                                                                        capsys):  # fmt: skip
    broken = tmp_path / "broken.html"
    broken.write_text(_BROKEN.replace("{wide}", "wide " * 60), encoding="utf-8")
    out, phone = tmp_path / "shot.png", tmp_path / "shot_phone.png"
    argv = [str(broken), str(out), "--phone", str(phone), "--chromium", chromium]
    assert tool.main(argv) == 1
    printed = capsys.readouterr().out
    assert "request outside the page (refused): http://example.invalid" in printed
    assert "laid out 980 px wide in a 390 px window" in printed
    with Image.open(out) as desktop_png, Image.open(phone) as phone_png:
        assert desktop_png.size[0] > 1280 and phone_png.size[0] > 980  # the whole wide page
    fine = tmp_path / "fine.html"
    fine.write_text('<!DOCTYPE html><html><head><meta name="viewport" content="width=device-width'
                    '"></head><body><p>fine</p></body></html>', encoding="utf-8")  # fmt: skip
    assert tool.main([str(fine), str(out), "--width", "1000", "--chromium", chromium]) == 0
    with Image.open(out) as desktop_png:
        assert desktop_png.size[0] == 1000


def test_script_names_the_bad_argument(tmp_path, capsys):
    page = tmp_path / "page.html"
    page.write_text("<p>x</p>", encoding="utf-8")
    missing = tmp_path / "no-browser"
    assert tool.main([str(page), str(tmp_path / "a.png"), "--chromium", str(missing)]) == 2
    assert f"--chromium: {missing} is not an executable file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        tool.main([str(tmp_path / "none.html"), str(tmp_path / "a.png")])
    assert exited.value.code == 2
    assert "report_html: no such file" in capsys.readouterr().err
    assert not (tmp_path / "a.png").exists()
