"""Open a featclf HTML report in headless Chromium: check its layout and save screenshots.

``report.html`` is one self-contained page; this script shows how it really renders. It loads
the page in Chromium at each width asked (1280 px desktop, 390 px phone), checks from the DOM
that nothing overflows or overlaps, and writes a full-page PNG screenshot per width::

    python tools/report_screenshot.py REPORT_HTML OUT_PNG [--phone PHONE_PNG] [--width 1280]
    make screenshots   # the demo's report -> artifacts/reports/mnist5k/screenshot{,_phone}.png

It exits 1 (and prints each problem) when the page scrolls sideways, a block spills out of its
container, two figures or thumbnails overlap, an image does not decode, or the page asks for
anything outside itself; 0 otherwise. Needs the ``playwright`` Python package (from PyPI) and a
Chromium on the machine: Debian's ``apt-get install chromium`` (``make chromium`` does it), found
at ``/usr/bin/chromium`` or given by ``--chromium PATH`` / ``FEATCLF_CHROMIUM``. Nothing is
downloaded: Playwright drives that Chromium over a pipe, with a fresh profile, every network
feature of the browser off and every request the page makes other than the report itself
refused (and reported).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DESKTOP_WIDTH = 1280
PHONE_WIDTH = 390
#: Flags for a quiet, offline, single-use browser (the profile directory is made per launch).
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm; Chromium crashes there
)  # fmt: skip

# Runs in the page. Returns what the layout checks found, as plain data. "Blocks" are the boxes
# a reader sees as units; overlap is only meaningful between blocks that are not nested.
_CHECK_JS = r"""
async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(img => img.decode().catch(() => null)));
  const doc = document.documentElement;
  const width = doc.clientWidth;
  const name = el => {
    let s = el.tagName.toLowerCase();
    if (el.className && typeof el.className === "string") s += "." + el.className.split(" ")[0];
    const text = (el.getAttribute("alt") || el.textContent || "").trim().slice(0, 60);
    return text ? `${s} "${text}"` : s;
  };
  const clips = el => ["auto", "scroll", "hidden", "clip"].includes(getComputedStyle(el).overflowX);
  const clipped = el => {  // inside a box that scrolls or clips sideways
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement)
      if (clips(p)) return true;
    return false;
  };
  const overflows = [];
  for (const el of document.body.querySelectorAll("*")) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if (!clipped(el) && (r.right > width + 0.5 || r.left < -0.5))
      overflows.push(`${name(el)} spans x ${r.left.toFixed(0)}..${r.right.toFixed(0)} ` +
                     `on a page ${width} px wide`);
    const style = getComputedStyle(el);
    if (style.display !== "inline" && !clips(el) && el.scrollWidth > el.clientWidth + 1
        && el.clientWidth > 0)
      overflows.push(`${name(el)}: content ${el.scrollWidth} px wide spills out of its ` +
                     `${el.clientWidth} px box`);
  }
  const blocks = Array.from(document.body.querySelectorAll(
    "h1, h2, h3, p, ul, table, figure, img, figcaption, .gallery, .table-scroll"));
  const boxes = blocks.map(el => el.getBoundingClientRect());
  const overlaps = [];
  for (let i = 0; i < blocks.length; i++) {
    for (let j = i + 1; j < blocks.length; j++) {
      if (blocks[i].contains(blocks[j]) || blocks[j].contains(blocks[i])) continue;
      const a = boxes[i], b = boxes[j];
      const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (w > 0.5 && h > 0.5)
        overlaps.push(`${name(blocks[i])} and ${name(blocks[j])} overlap by ` +
                      `${w.toFixed(0)} x ${h.toFixed(0)} px`);
    }
  }
  const undecoded = imgs.filter(img => !img.complete || img.naturalWidth === 0)
                        .map(img => name(img));
  const scrollers = Array.from(document.querySelectorAll(".table-scroll"))
                         .filter(el => el.scrollWidth > el.clientWidth + 1).length;
  return {layout_width: width, scroll_width: doc.scrollWidth, height: doc.scrollHeight,
          images: imgs.length, gallery_thumbs: document.querySelectorAll("figure.thumb").length,
          tables: document.querySelectorAll("table").length, scrolling_tables: scrollers,
          overflows, overlaps, undecoded};
}
"""


@dataclass
class PageCheck:
    """What Chromium showed at one width: sizes, counts and every layout problem found."""

    width: int
    layout_width: int
    scroll_width: int
    height: int
    images: int
    gallery_thumbs: int
    tables: int
    scrolling_tables: int
    overflows: list[str]
    overlaps: list[str]
    undecoded: list[str]
    requests: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def problems(self) -> list[str]:
        """Every problem, one line each; empty when the page is fine at this width."""
        found = []
        if self.layout_width != self.width:
            found.append(f"the page is laid out {self.layout_width} px wide in a {self.width} px "
                         "window (a phone shrinks it to fit: no <meta name=\"viewport\">?)")
        if self.scroll_width > self.layout_width:
            found.append(f"the page scrolls sideways: {self.scroll_width} px of content in a "
                         f"{self.layout_width} px window")  # fmt: skip
        found += [f"overflow: {o}" for o in self.overflows]
        found += [f"overlap: {o}" for o in self.overlaps]
        found += [f"image not decoded: {u}" for u in self.undecoded]
        found += [f"request outside the page (refused): {r}" for r in self.requests]
        return found


def find_chromium(path: str | os.PathLike | None = None) -> str:
    """The Chromium executable: ``path``, else ``$FEATCLF_CHROMIUM``, else one on the PATH."""
    for given, what in ((path, "--chromium"), (os.environ.get("FEATCLF_CHROMIUM"),
                                               "FEATCLF_CHROMIUM")):  # fmt: skip
        if given:
            if Path(given).is_file() and os.access(given, os.X_OK):
                return str(given)
            raise FileNotFoundError(f"{what}: {given} is not an executable file")
    candidates = ["/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise FileNotFoundError(
        "no Chromium found (at /usr/bin/chromium or on the PATH): install Debian's with "
        "`make chromium` (apt-get install -y chromium), or name one with --chromium PATH or "
        "FEATCLF_CHROMIUM"
    )


def check_pages(
    html_files: Iterable[str | os.PathLike], widths: Sequence[int] = (DESKTOP_WIDTH, PHONE_WIDTH),
    *, screenshots: dict[tuple[int, int], str | os.PathLike] | None = None,
    chromium: str | os.PathLike | None = None,
) -> list[list[PageCheck]]:
    """Load each HTML file in one headless Chromium at each width and check its layout.

    Parameters
    ----------
    html_files : iterable of path-like
        Pages to load (``file://``).
    widths : sequence of int
        Window widths in CSS pixels. Widths under 600 are loaded as a phone (touch, the page's
        viewport meta honoured), so a page without ``<meta name="viewport">`` shows as a
        980 px layout shrunk to fit, as on a real phone, and fails the width check.
    screenshots : dict of (file index, width) to path-like, optional
        Where to save full-page PNG screenshots.
    chromium : path-like, optional
        The browser executable (see :func:`find_chromium`).

    Returns
    -------
    list of list of PageCheck
        Per file, per width.
    """
    executable = find_chromium(chromium)
    from playwright.sync_api import sync_playwright

    screenshots = dict(screenshots or {})
    results: list[list[PageCheck]] = []
    # Playwright gives each launch a fresh temporary profile (--user-data-dir), removed on close,
    # and each check below a new context of its own, so nothing carries over between pages.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=list(CHROMIUM_FLAGS)
        )
        try:
            for index, html_file in enumerate(html_files):
                url = Path(html_file).resolve().as_uri()
                results.append([_check_one(browser, url, width, screenshots.get((index, width)))
                                for width in widths])  # fmt: skip
        finally:
            browser.close()
    return results


def _check_one(browser, url: str, width: int, screenshot) -> PageCheck:
    """One page at one width, in a context of its own (a phone under 600 px)."""
    phone = width < 600
    context = browser.new_context(
        viewport={"width": width, "height": 844 if phone else 900},
        is_mobile=phone, has_touch=phone, device_scale_factor=1,
    )
    outside: list[str] = []

    def refuse(route) -> None:
        # Only the page itself may load: a self-contained report needs nothing else, not even
        # a file beside it (Chromium spells file URLs its own way, so no string comparison).
        request = route.request
        if (request.is_navigation_request() and request.frame.parent_frame is None
                and request.url.startswith("file:")):  # fmt: skip
            route.continue_()
        else:
            outside.append(request.url)
            route.abort()

    try:
        context.route("**/*", refuse)
        page = context.new_page()
        page.goto(url, wait_until="load")
        found = page.evaluate(_CHECK_JS)
        check = PageCheck(width=width, **found, requests=outside)
        if screenshot is not None:
            _save_png(page.screenshot(full_page=True), Path(screenshot))
            check.screenshot = Path(screenshot)
        return check
    finally:
        context.close()


def _save_png(data: bytes, path: Path) -> None:
    """Save a screenshot with a 256-colour palette: a third of the bytes, the same text and plots
    (the page has few colours), small enough to commit beside the report. The octree quantizer
    takes ~0.1 s on a 1280 x 7000 page; median cut and ``optimize=True`` cost 1.5 s more."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(io.BytesIO(data)) as shot:
        palette = shot.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE,
                                               dither=Image.Dither.NONE)  # fmt: skip
    palette.save(path)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: 0 when the page is fine at every width, 1 with problems, 2 on bad
    arguments or no browser."""
    parser = argparse.ArgumentParser(
        description="Check a featclf HTML report's layout in headless Chromium and save "
        "full-page screenshots.")  # fmt: skip
    parser.add_argument("report_html", help="the report.html to open")
    parser.add_argument("out_png", help="where to write the desktop screenshot (PNG)")
    parser.add_argument("--width", type=int, default=DESKTOP_WIDTH,
                        help=f"desktop window width in CSS px (default {DESKTOP_WIDTH})")
    parser.add_argument("--phone", metavar="PNG",
                        help=f"also load it as a {PHONE_WIDTH} px wide phone; screenshot here")
    parser.add_argument("--chromium", metavar="PATH",
                        help="Chromium executable (default $FEATCLF_CHROMIUM, /usr/bin/chromium)")
    args = parser.parse_args(argv)
    if not Path(args.report_html).is_file():
        parser.error(f"report_html: no such file: {args.report_html}")
    if args.width < 600:
        parser.error(f"--width: {args.width} is a phone's width; use --phone PNG for one")
    widths = [args.width] + ([PHONE_WIDTH] if args.phone else [])
    shots = {(0, args.width): args.out_png}
    if args.phone:
        shots[0, PHONE_WIDTH] = args.phone
    try:
        (checks,) = check_pages([args.report_html], widths, screenshots=shots,
                                chromium=args.chromium)  # fmt: skip
    except FileNotFoundError as error:
        print(f"report_screenshot: {error}", file=sys.stderr)
        return 2
    except ImportError as error:
        print(f"report_screenshot: {error}: pip install playwright (or pip install -e '.[dev]')",
              file=sys.stderr)  # fmt: skip
        return 2
    status = 0
    for check in checks:
        print(f"{check.width} px: page {check.scroll_width} x {check.height} px, "
              f"{check.images - len(check.undecoded)} of {check.images} images decoded "
              f"({check.gallery_thumbs} gallery thumbnails), {check.tables} tables "
              f"({check.scrolling_tables} scroll sideways in their box) -> {check.screenshot}")
        for problem in check.problems:
            print(f"  {problem}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
