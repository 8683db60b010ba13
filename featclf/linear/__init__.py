"""Linear classifiers of cached features solved in torch: full batch, on CPU threads or CUDA.

:class:`TorchLogisticRegression` (multinomial logistic regression) and :class:`TorchLinearSVC`
(linear SVM: squared hinge one-vs-rest, or Crammer-Singer) minimise scikit-learn's objectives,

    0.5 * ||W||^2 + C * sum_i loss_i(W x_i + b),

so a C means the same here as in ``LogisticRegression`` / ``LinearSVC`` (the intercept is not
penalised, as in ``LogisticRegression(solver="lbfgs")``; liblinear's is, and so is
``TorchLinearSVC``'s). The solvers work on the whole matrix at once, in float32 by default, on
the CPU's threads or on a GPU: L-BFGS for logistic regression and Crammer-Singer, truncated
Newton (conjugate gradients preconditioned by the features' Gram matrix) for the one-vs-rest
squared hinge, where L-BFGS needs thousands of steps at large C. :func:`regularization_path`
fits a whole grid of C warm-started, and
:class:`LinearProbe` is the DINOv2 / Kornblith et al. linear-probe protocol: 45 values of C
from 1e-6 to 1e5, chosen on a validation split, refit on train + validation.

Fitted estimators expose ``coef_``, ``intercept_`` and ``classes_`` in scikit-learn's
convention (binary problems: one row, the score of ``classes_[1]``), and predict in NumPy
from them, so ``argmax(X @ coef_.T + intercept_)`` is exactly their prediction.
"""

from featclf.linear._estimators import TorchLinearSVC, TorchLogisticRegression
from featclf.linear._path import PROBE_GRID, LinearProbe, PathStep, regularization_path

__all__ = [
    "PROBE_GRID", "LinearProbe", "PathStep", "TorchLinearSVC", "TorchLogisticRegression",
    "regularization_path",
]  # fmt: skip
