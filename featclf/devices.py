"""Choosing the device and numeric precision, the same way for training and extraction.

An invalid value reads as scikit-learn's parameter errors do (:mod:`featclf.params`), naming
the estimator when the caller says which (``owner``).
"""

from __future__ import annotations

import contextlib
import os

import torch

from featclf.errors import option
from featclf.params import InvalidParameterError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: The environment variable that chooses the device ``"auto"`` means (e.g. ``cpu``).
DEVICE_ENV = "FEATCLF_DEVICE"


def _invalid(name: str, must: str, value: object, owner: str | None) -> InvalidParameterError:
    """scikit-learn's wording for a value its constraint objects cannot express."""
    of = f" of {owner}" if owner else ""
    return InvalidParameterError(f"The {name!r} parameter{of} must be {must}. "
                                 f"Got {value!r} instead.")


def resolve_device(device: str | torch.device = "auto", *, owner: str | None = None
                   ) -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a device into a ``torch.device``.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` picks the device named by the environment variable ``FEATCLF_DEVICE`` when
        it is set (``FEATCLF_DEVICE=cpu`` keeps a CUDA host's jobs on the CPU), else CUDA when
        available, else the CPU.
    owner : str, optional
        The estimator or function whose parameter this is, named in the error.

    Returns
    -------
    torch.device

    Raises
    ------
    InvalidParameterError
        (a ``ValueError``) Not a device name.
    ValueError
        A CUDA device on a machine where torch sees no GPU.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> os.environ["FEATCLF_DEVICE"] = "cpu"
    >>> resolve_device("auto")
    device(type='cpu')
    >>> del os.environ["FEATCLF_DEVICE"]
    >>> resolve_device("gpu", owner="DeepFeatureExtractor")
    Traceback (most recent call last):
    sklearn.utils._param_validation.InvalidParameterError: The 'device' parameter of \
DeepFeatureExtractor must be 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device. Got 'gpu' instead.
    """
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto" and os.environ.get(DEVICE_ENV, "auto") != "auto":
        return resolve_device(os.environ[DEVICE_ENV], owner=f"the {DEVICE_ENV} variable")
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise _invalid("device", "'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device", device,
                           owner) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        # A valid value on the wrong machine: not a parameter error.
        raise ValueError(f"{option('device', str(device))} asks for CUDA, but torch sees no GPU "
                         f"here; use {option('device', 'auto')} or {option('device', 'cpu')}")
    return dev


def resolve_precision(precision: str, device: torch.device, *, owner: str | None = None) -> str:
    """``"auto"`` → bf16 autocast on CUDA, fp32 on the CPU; other values are checked.

    Parameters
    ----------
    precision : {"auto", "fp32", "bf16", "fp16"}
        The precision asked for.
    device : torch.device
        Where the network runs.
    owner : str, optional
        The estimator or function whose parameter this is, named in the error.

    Returns
    -------
    str
        ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    Raises
    ------
    InvalidParameterError
        (a ``ValueError``) Not one of :data:`PRECISIONS`.

    Examples
    --------
    >>> resolve_precision("auto", torch.device("cpu"))
    'fp32'
    >>> resolve_precision("fp8", torch.device("cpu"), owner="BatchRunner")
    Traceback (most recent call last):
    sklearn.utils._param_validation.InvalidParameterError: The 'precision' parameter of \
BatchRunner must be a str among {'auto', 'fp32', 'bf16', 'fp16'}. Got 'fp8' instead.
    """
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise _invalid("precision", f"a str among {{{', '.join(map(repr, PRECISIONS))}}}",
                       precision, owner)
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """An autocast context for ``precision`` ("fp32" gives a no-op context).

    Examples
    --------
    >>> with autocast(torch.device("cpu"), "fp32"):
    ...     pass
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
