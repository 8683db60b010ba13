"""Doctest set-up for the examples in ``featclf/`` and ``README.md``.

The examples call ``tempfile.mkdtemp()`` as a reader would; here every such folder lands in the
example's own ``tmp_path``, which pytest removes once the example passes.
"""

import tempfile

import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _doctest_temp_folders(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    if isinstance(request.node, DoctestItem):
        monkeypatch.setattr(tempfile, "tempdir", str(request.getfixturevalue("tmp_path")))
