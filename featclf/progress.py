"""Progress bars: tqdm's notebook widget where it can draw, its text bar everywhere else.

``tqdm.auto`` warns ("IProgress not found") as soon as it is imported in a Jupyter kernel
without ipywidgets, even when no bar is ever shown; featclf imports it only where ipywidgets
is installed, so ``import featclf`` stays quiet in a notebook.
"""

from __future__ import annotations

import functools
import importlib.util

__all__ = ["progress_bar"]


@functools.cache
def _tqdm_class() -> type:
    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm
    return tqdm


def progress_bar(*, enabled: bool = True, **kwargs):
    """A tqdm bar, or a disabled one (counts nothing, prints nothing) when not ``enabled``.

    Parameters
    ----------
    enabled : bool, default=True
        Draw the bar; ``False`` gives tqdm's no-op bar, so callers need no second code path.
    **kwargs
        Passed to tqdm (``total``, ``desc``, ``unit``, ...).

    Returns
    -------
    tqdm.std.tqdm
        The widget bar (``tqdm.notebook.tqdm``, a subclass) in a Jupyter kernel with
        ipywidgets, the text bar on stderr elsewhere.

    Examples
    --------
    >>> with progress_bar(total=3, enabled=False) as bar:
    ...     bar.update(3)
    >>> bar.disable
    True
    """
    return _tqdm_class()(disable=not enabled, **kwargs)
