"""Content fingerprints: the one definition of how featclf names data, weights and settings.

The feature store keys every vector by these digests, so they must be stable across processes,
machines and runs: they hash bytes, never Python object ids or pickles.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import xxhash

if TYPE_CHECKING:  # pragma: no cover
    import torch


def _as_numpy(array) -> np.ndarray:
    """A torch tensor as a contiguous numpy array (bfloat16 as its int16 bit pattern).

    torch is looked up, not imported: an object can only be a tensor once torch is loaded, so
    the store (which hashes configurations only) never pays for importing it.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(array, torch.Tensor):
        t = array.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: hash its bit pattern
            t = t.view(torch.int16)
        return t.numpy()
    return array


def digest_bytes(data: bytes | memoryview) -> str:
    """128-bit xxh3 hex digest of raw bytes (several times faster than sha256).

    Parameters
    ----------
    data : bytes or memoryview
        The bytes to hash.

    Returns
    -------
    str
        32 hex characters.

    Examples
    --------
    >>> digest_bytes(b"featclf")
    '628ff615236b886756b64ed400b01c76'
    """
    return xxhash.xxh3_128_hexdigest(data)


def digest_array(array: np.ndarray | torch.Tensor) -> str:
    """Digest of an array's dtype, shape and values (C order), independent of memory layout.

    Parameters
    ----------
    array : numpy.ndarray or torch.Tensor
        The array.

    Returns
    -------
    str
        32 hex characters.

    Examples
    --------
    >>> a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    >>> digest_array(a) == digest_array(np.asfortranarray(a))
    True
    """
    array = np.ascontiguousarray(_as_numpy(array))
    h = xxhash.xxh3_128()
    h.update(f"{array.dtype.str}{array.shape}".encode())
    h.update(memoryview(array).cast("B"))
    return h.hexdigest()


def digest_rows(array: np.ndarray | torch.Tensor, *, chunk: int = 1024) -> list[str]:
    """:func:`digest_array` of every row ``array[i]``, in one pass (far faster than a loop).

    Parameters
    ----------
    array : numpy.ndarray or torch.Tensor
        ``(n, ...)`` with at least two dimensions; any memory layout.
    chunk : int, default=1024
        Rows made contiguous at a time (bounds the extra memory of a strided input).

    Returns
    -------
    list of str
        ``n`` digests, equal to ``[digest_array(row) for row in array]``.

    Examples
    --------
    >>> a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4).transpose(0, 2, 1)
    >>> digest_rows(a) == [digest_array(row) for row in a]
    True
    """
    out: list[str] = []
    for start in range(0, len(array), chunk):
        block = array[start:start + chunk]
        block = np.ascontiguousarray(_as_numpy(block))
        prefix = f"{block.dtype.str}{block.shape[1:]}".encode()
        if block.size == 0:  # empty rows: only dtype and shape are hashed
            out.extend(xxhash.xxh3_128_hexdigest(prefix) for _ in range(len(block)))
            continue
        flat = memoryview(block.reshape(-1).view(np.uint8))
        step = len(flat) // len(block)
        for i in range(0, len(flat), step):
            h = xxhash.xxh3_128(prefix)
            h.update(flat[i:i + step])
            out.append(h.hexdigest())
    return out


def digest_state_dict(state: Mapping[str, torch.Tensor]) -> str:
    """Digest of a state dict: every tensor's name, dtype, shape and values, in sorted order.

    Parameters
    ----------
    state : mapping of str to torch.Tensor
        A module's ``state_dict()``.

    Returns
    -------
    str
        32 hex characters.

    Examples
    --------
    >>> import torch
    >>> m = torch.nn.Linear(2, 2)
    >>> before = digest_state_dict(m.state_dict())
    >>> with torch.no_grad():
    ...     m.weight[0, 0] += 1
    >>> before == digest_state_dict(m.state_dict())
    False
    """
    h = xxhash.xxh3_128()
    for name in sorted(state):
        value = state[name]
        h.update(name.encode())
        torch = sys.modules.get("torch")  # values of a state dict are tensors (torch loaded)
        if torch is not None and isinstance(value, torch.Tensor):
            h.update(digest_array(value).encode())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def digest_json(obj: Any) -> str:
    """Digest of a JSON-able description (settings, preprocessing), with sorted keys.

    Parameters
    ----------
    obj : object
        Anything :func:`json.dumps` accepts (``default=str`` covers the rest).

    Returns
    -------
    str
        32 hex characters.

    Examples
    --------
    >>> digest_json({"b": 1, "a": 2}) == digest_json({"a": 2, "b": 1})
    True
    """
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return digest_bytes(text.encode())


def module_fingerprint(module: torch.nn.Module) -> str:
    """Digest of a network: its class path and every weight and buffer.

    The class, not a registry name, so that one network gets one fingerprint however it was
    given: ``load_network("lenet5")``, the same weights in a ``LeNet5()`` module, a checkpoint
    file or a fitted classifier (:attr:`featclf.models.Network.fingerprint`).

    Parameters
    ----------
    module : torch.nn.Module
        The network.

    Returns
    -------
    str
        32 hex characters; equal for modules of one class with equal weights and buffers.

    Examples
    --------
    >>> import torch
    >>> torch.manual_seed(0) is not None
    True
    >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> module_fingerprint(a) == module_fingerprint(b)
    False
    >>> b.load_state_dict(a.state_dict())
    <All keys matched successfully>
    >>> module_fingerprint(a) == module_fingerprint(b)
    True
    """
    name = f"{type(module).__module__}.{type(module).__qualname__}"
    return digest_json({"arch": name, "weights": digest_state_dict(module.state_dict())})
