"""scikit-learn's own estimator checks on DeepFeatureExtractor, run for real.

The checks feed small random tables such as ``(20, 3)`` of floats with any sign. With
``image_shape=(1, -1)`` every row is a 1-pixel-high grey image (``(20, 3)``: twenty 1x3 images)
and with ``preprocess=None`` the values reach the network as they are (model-ready), so the
checks exercise the contracts themselves: pickling, idempotent fits, dtypes, memmaps, order and
subset invariance, feature counts, output containers. The network is a tiny registered model
(a convolution that works on any image size), given by name so that its parameters hash the
same after ``fit``. The checks run with ``xfail_strict=True``: a check listed below that starts
passing fails the run, so the list stays exact.
"""

from __future__ import annotations

from imagefile_helpers import register_tiny_cnn
from sklearn.utils.estimator_checks import parametrize_with_checks

from featclf.extract import DeepFeatureExtractor

TINY = register_tiny_cnn("sklearn_checks_tiny_cnn", width=4, num_classes=3)

# Only what is genuinely about images: each with its reason.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


def _expected_failed_checks(estimator) -> dict[str, str]:
    return EXPECTED_FAILED_CHECKS


@parametrize_with_checks([DeepFeatureExtractor(TINY, weights="random", image_shape=(1, -1),
                                               preprocess=None, device="cpu")],
                         expected_failed_checks=_expected_failed_checks, xfail_strict=True)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
