"""Set-up for the whole suite: no downloads, and doctest temporary folders.

The examples call ``tempfile.mkdtemp()`` as a reader would; here every such folder lands in the
example's own ``tmp_path``, which pytest removes once the example passes.
"""

import os
import tempfile

import pytest
from _pytest.doctest import DoctestItem

# Nothing in the suite may download weights: pretrained weights that torch has not cached raise
# featclf's offline error instead (tests save the weights they need themselves).
os.environ["FEATCLF_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def _doctest_temp_folders(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    if isinstance(request.node, DoctestItem):
        monkeypatch.setattr(tempfile, "tempdir", str(request.getfixturevalue("tmp_path")))
