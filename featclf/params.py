"""Parameter validation with one wording everywhere: scikit-learn's.

Every featclf estimator and public function checks its parameters here, so an invalid value
reads the same wherever it is given: "The 'batch_size' parameter of DeepFeatureExtractor must
be an int in the range [1, inf) or a str among {'auto'}. Got 0 instead." The constraints are
scikit-learn's own (:class:`~sklearn.utils._param_validation.Interval`, ``StrOptions``, types),
so the wording follows scikit-learn's when it changes; this module is the one place that
depends on that (private) module.

Examples
--------
>>> from numbers import Integral
>>> check_params({"batch_size": [Interval(Integral, 1, None, closed="left"),
...                              StrOptions({"auto"})]}, {"batch_size": 0},
...              "DeepFeatureExtractor")
Traceback (most recent call last):
sklearn.utils._param_validation.InvalidParameterError: The 'batch_size' parameter of \
DeepFeatureExtractor must be an int in the range [1, inf) or a str among {'auto'}. Got 0 instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    InvalidParameterError,
    Options,
    StrOptions,
    validate_parameter_constraints,
)

__all__ = [
    "HasMethods",
    "Interval",
    "InvalidParameterError",
    "Options",
    "StrOptions",
    "check_params",
]


def check_params(constraints: Mapping[str, list], params: Mapping[str, Any], owner: str) -> None:
    """Check ``params`` against ``constraints``; raise scikit-learn's ``InvalidParameterError``.

    Parameters
    ----------
    constraints : mapping of str to list
        For each parameter, the accepted kinds (scikit-learn constraint objects, types,
        ``None``, ``"boolean"``, ``callable``...); a parameter not named here is not checked.
    params : mapping of str to object
        The values, e.g. ``estimator.get_params(deep=False)``.
    owner : str
        The estimator or function named in the message.

    Raises
    ------
    InvalidParameterError
        A ``ValueError`` and ``TypeError``: "The '<name>' parameter of <owner> must be ...
        Got <value> instead."

    Examples
    --------
    >>> check_params({"pooling": [StrOptions({"avg", "max"})]}, {"pooling": "avg"}, "f")

    Booleans are not integers here (scikit-learn's ``Interval(Integral, ...)`` would take
    ``True`` for 1), unless ``"boolean"`` is among the accepted kinds:

    >>> from numbers import Integral
    >>> check_params({"epochs": [Interval(Integral, 1, None, closed="left")]}, {"epochs": True},
    ...              "SoftmaxClassifier")
    Traceback (most recent call last):
    sklearn.utils._param_validation.InvalidParameterError: The 'epochs' parameter of \
SoftmaxClassifier must be an int in the range [1, inf). Got True instead.
    """
    for name, value in params.items():
        kinds = constraints.get(name)
        if isinstance(value, bool | np.bool_) and kinds is not None and not any(
                k == "boolean" or k is bool for k in kinds):
            try:
                validate_parameter_constraints({name: kinds}, {name: _NOT_A_VALUE},
                                               caller_name=owner)
            except InvalidParameterError as exc:
                raise InvalidParameterError(
                    str(exc).replace(repr(_NOT_A_VALUE), repr(value))) from None
    validate_parameter_constraints(dict(constraints), dict(params), caller_name=owner)


class _NotAValue:
    """A value no constraint accepts: how a refused boolean gets scikit-learn's message."""

    def __repr__(self) -> str:
        return "<not a value>"


_NOT_A_VALUE = _NotAValue()
