"""Thumbnails of the test images the report should show: confident mistakes and disagreements.

Only when the test images are files (``Comparison.images`` holds their paths): per model/layer,
the images the softmax head and the SVM chosen by cross-validation got wrong with the highest
score of the class they predicted, and the images where one of the two is right and the other
wrong. The thumbnails are read with PIL when the HTML is written and embedded in it as base64
PNG, so the page stays one self-contained file.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from featclf.comparison import Comparison
from featclf.report._tables import _groups, _name, _softmax_and_rival

#: Thumbnails per row of the gallery, and their longest side in pixels.
GALLERY_SIZE = 8
THUMBNAIL_PX = 96


@dataclass(frozen=True)
class Thumb:
    """One gallery image: its file and what the two classifiers said about it."""

    path: str
    caption: str


def _file_paths(comparison: Comparison) -> np.ndarray | None:
    """The test images' paths when they are files, else None."""
    images, y_true = comparison.images, comparison.y_true
    if images is None or y_true is None or len(images) != len(y_true) or len(images) == 0:
        return None
    if images.dtype.kind not in "OUS" or not all(Path(str(p)).is_file() for p in images[:5]):
        return None
    return images


def _caption(i: int, paths: np.ndarray, y_true: np.ndarray, named: dict[str, np.ndarray]) -> str:
    """File name, true class and each classifier's prediction of test image ``i``."""
    said = ", ".join(f"{_name(c)}: {pred[i]}" for c, pred in named.items())
    return f"{Path(str(paths[i])).name}: true {y_true[i]}; {said}"


def gallery_rows(
    df: pd.DataFrame, comparison: Comparison, size: int = GALLERY_SIZE
) -> list[tuple[str, list[Thumb]]]:
    """(title, thumbnails) of each gallery row; empty when the test images are not files.

    Per model/layer: the most confidently wrong images of the softmax head and of the SVM
    chosen by CV (highest score of the predicted class first), then the images only the
    softmax head got right and those only the SVM got right (in test order).
    """
    paths = _file_paths(comparison)
    if paths is None:
        return []
    y_true = comparison.y_true
    rows: list[tuple[str, list[Thumb]]] = []
    for model, layer, group in _groups(df):
        softmax, rival = _softmax_and_rival(group[group["selected"]])
        named = {}
        for row in (softmax, rival):
            if row is None:
                continue
            pred = comparison.prediction(model, layer, str(row["classifier"]))
            if pred is not None and len(pred) == len(y_true):
                named[str(row["classifier"])] = pred

        def thumbs(chosen: np.ndarray, named: dict[str, np.ndarray] = named) -> list[Thumb]:
            return [Thumb(str(paths[i]), _caption(i, paths, y_true, named)) for i in chosen]

        where = f"{model} / {layer}"
        for classifier, pred in named.items():
            wrong = np.flatnonzero(pred != y_true)
            score = comparison.scores.get((model, layer, classifier))
            if score is not None and len(score) == len(y_true) and len(wrong):
                wrong = wrong[np.argsort(-score[wrong], kind="stable")]
                what = comparison.score_kinds.get((model, layer, classifier), "score")
                title = (f"{where}: most confidently wrong, {_name(classifier)} "
                         f"(highest {what} score of the predicted class first)")  # fmt: skip
            else:
                title = f"{where}: wrong, {_name(classifier)}"
            if len(wrong):
                rows.append((title, thumbs(wrong[:size])))
        if len(named) == 2:
            (first, a), (second, b) = named.items()
            for right, other, mask in (
                (first, second, (a == y_true) & (b != y_true)),
                (second, first, (b == y_true) & (a != y_true)),
            ):
                chosen = np.flatnonzero(mask)[:size]
                if len(chosen):
                    title = f"{where}: {_name(right)} right, {_name(other)} wrong"
                    rows.append((title, thumbs(chosen)))
    return rows


def thumbnail_png(path: str | Path, px: int = THUMBNAIL_PX) -> bytes | None:
    """A PNG thumbnail of an image file (longest side ``px``), or None when unreadable."""
    try:
        with Image.open(path) as image:
            image.load()
            thumb = image.convert("L" if image.mode in ("L", "I", "I;16", "1") else "RGB")
    except (OSError, ValueError):
        return None  # the file changed or vanished since the run; the caption still says which
    thumb.thumbnail((px, px))
    buffer = io.BytesIO()
    thumb.save(buffer, format="PNG")
    return buffer.getvalue()


def gallery_html(thumbs: list[Thumb]) -> str:
    """One gallery row as HTML: base64 PNG thumbnails with their captions as titles."""
    import html

    cells = []
    for thumb in thumbs:
        data = thumbnail_png(thumb.path)
        caption = html.escape(thumb.caption)
        if data is None:
            cells.append(f'<figure class="thumb"><figcaption>{caption} (unreadable)'
                         "</figcaption></figure>")  # fmt: skip
            continue
        encoded = base64.b64encode(data).decode("ascii")
        cells.append(
            f'<figure class="thumb"><img src="data:image/png;base64,{encoded}" alt="{caption}" '
            f'title="{caption}"><figcaption>{caption}</figcaption></figure>'
        )
    return f'<div class="gallery">{"".join(cells)}</div>'
