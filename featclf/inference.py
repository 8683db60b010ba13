"""BatchRunner: the one loop that runs a network over batches of images.

Feature extraction (:class:`~featclf.extract.DeepFeatureExtractor`) and prediction
(:meth:`SoftmaxClassifier.predict_proba <featclf.train.SoftmaxClassifier.predict_proba>`) both
run a network in inference mode over batches; everything about *how* it runs lives here:

* the device and the network's copy on it (moved once and kept, not copied per call);
* precision (bf16/fp16 autocast; outputs are float32 either way);
* the channels-last memory layout for convolutional networks;
* ``torch.compile`` with static shapes (a short last batch is padded to the batch size, so one
  graph serves every batch: eval-mode networks treat images independently, so zero rows change
  no other row's output);
* on CUDA, pinned host buffers and non-blocking copies, so that batch *k*'s copy back to the
  host overlaps batch *k+1*'s forward.

What an image must look like (decoding, resizing, normalising) is not the runner's business: it
receives batches (:class:`~featclf.data.sources.Batch`) and an optional ``finish`` callable that
runs on the device before the forward (e.g. :meth:`ImagePreprocess.finish
<featclf.data.ImagePreprocess.finish>`: uint8 to normalised float).

Examples
--------
>>> import torch
>>> from featclf.data.inputs import as_image_source
>>> runner = BatchRunner(torch.nn.Flatten(), device="cpu")
>>> source = as_image_source(torch.ones(5, 1, 2, 2))
>>> [(idx.tolist(), out.shape) for idx, out, _ in runner.run(
...     source.iter_batches(batch_size=2, preprocess=None))]
[([0, 1], (2, 4)), ([2, 3], (2, 4)), ([4], (1, 4))]
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from featclf.data.sources import Batch, InputError
from featclf.devices import autocast, resolve_device, resolve_precision

__all__ = ["BatchRunner", "Outputs", "module_device", "resolve_batch_size"]

#: What one forward returns, on the host: one array, or one per named output.
Outputs = np.ndarray | dict[str, np.ndarray]


#: batch_size="auto" on the CPU: input pixels per batch (see DeepFeatureExtractor).
AUTO_BATCH_PIXELS_CPU = 400_000
AUTO_BATCH_GPU = 256


def resolve_batch_size(batch_size, device: torch.device, preprocess: Callable | None) -> int:
    """The batch size ``"auto"`` stands for on ``device`` with ``preprocess``'s image size.

    Parameters
    ----------
    batch_size : int or "auto"
        The parameter; an int is returned as it is.
    device : torch.device
        Where the network runs.
    preprocess : callable or None
        Its ``output_size`` (an :class:`~featclf.data.ImagePreprocess`) gives the input size;
        without one the CPU gets 64.

    Returns
    -------
    int

    Examples
    --------
    >>> from featclf.data import ImagePreprocess
    >>> cpu = torch.device("cpu")
    >>> [resolve_batch_size("auto", cpu, ImagePreprocess(s)) for s in (224, 112, 64, 28)]
    [8, 32, 64, 64]
    >>> resolve_batch_size("auto", torch.device("cuda"), None), resolve_batch_size(5, cpu, None)
    (256, 5)
    """
    if not isinstance(batch_size, str):
        return int(batch_size)
    if device.type != "cpu":
        return AUTO_BATCH_GPU
    size = getattr(preprocess, "output_size", None)
    if size is None:
        return 64
    ideal = AUTO_BATCH_PIXELS_CPU / (size[0] * size[1])
    return int(min(64, max(8, 2 ** round(math.log2(ideal)))))


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for a module without any).

    Examples
    --------
    >>> module_device(torch.nn.Linear(2, 2))
    device(type='cpu')
    """
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _is_convolutional(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


class BatchRunner:
    """Run ``module`` in inference mode over batches, on one device, at one precision.

    Parameters
    ----------
    module : torch.nn.Module
        The network. It is moved to ``device`` when it first runs (a job answered from a cache
        never moves it) and stays there; its output is a tensor or a dict of tensors.
    device : str or torch.device, default="auto"
        CUDA when available, else the CPU (see :func:`featclf.devices.resolve_device`).
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        ``"auto"``: bf16 autocast on CUDA, fp32 on the CPU.
    channels_last : bool or "auto", default="auto"
        The channels-last layout for network and inputs; ``"auto"``: for convolutional networks.
    compile : bool, default=False
        Run the network through ``torch.compile(dynamic=False)``.

    Attributes
    ----------
    device : torch.device
        Where the network runs (a CUDA device with its index).
    precision : str
        ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    channels_last : bool
        Whether the channels-last layout is used.
    """

    def __init__(self, module: nn.Module, *, device: str | torch.device = "auto",
                 precision: str = "auto", channels_last: bool | str = "auto",
                 compile: bool = False) -> None:
        device = resolve_device(device)
        if device.type == "cuda" and device.index is None:  # name the GPU its weights go to
            device = torch.device("cuda", torch.cuda.current_device())
        self.module = module
        self.device = device
        self.precision = resolve_precision(precision, device)
        self.channels_last = (_is_convolutional(module) if channels_last == "auto"
                              else bool(channels_last))
        self.compile = bool(compile)
        self._compiled: tuple[nn.Module, nn.Module] | None = None

    def __getstate__(self) -> dict:
        # A compiled graph does not pickle, and pickles must load on machines without the GPU.
        state = dict(self.__dict__, _compiled=None)
        if module_device(self.module).type != "cpu":
            # A CPU copy: the live network stays on its device for the next batch.
            state["module"] = copy.deepcopy(self.module).to("cpu")
        return state

    def layout(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` in the memory layout the network runs in."""
        if self.channels_last and images.ndim == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def network(self) -> nn.Module:
        """The network on its device, in eval mode (compiled when asked)."""
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"this network runs on {self.device}, but torch sees no GPU here; "
                             "set device='cpu' (or 'auto') and fit again")
        model = self.module
        where = module_device(model)
        if where.type != self.device.type or self.device.index not in (None, where.index):
            model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        # Cheap, and repairs graph modules that a copy left in training mode.
        model.eval()
        if not self.compile:
            return model
        if self._compiled is None or self._compiled[0] is not model:
            self._compiled = (model, torch.compile(model, dynamic=False))
        return self._compiled[1]

    def forward(self, images: torch.Tensor, *, finish: Callable | None = None,
                batch_size: int | None = None, model: nn.Module | None = None
                ) -> torch.Tensor | dict[str, torch.Tensor]:
        """One batch through the network: float32 outputs, on the device.

        Parameters
        ----------
        images : torch.Tensor
            ``(n, ...)`` on any device.
        finish : callable, optional
            Applied on the device before the forward (e.g. uint8 to normalised float).
        batch_size : int, optional
            With ``compile``, shorter batches are padded to it.
        model : torch.nn.Module, optional
            :meth:`network`'s result, when the caller already holds it.
        """
        model = self.network() if model is None else model
        # Inference mode and autocast are entered per batch, never across a yield, so the code
        # consuming a generator never runs inside them.
        with torch.inference_mode():
            x = images.to(self.device, non_blocking=True)
            if finish is not None:
                x = finish(x)
            if x.dtype != torch.float32:
                x = x.float()
            n = x.shape[0]
            if self.compile and batch_size is not None and n < batch_size:
                x = torch.cat([x, x.new_zeros((batch_size - n, *x.shape[1:]))])
            with autocast(self.device, self.precision):
                out = model(self.layout(x))
            if isinstance(out, dict):
                return {k: v[:n].float() for k, v in out.items()}
            return out[:n].float()

    def run(self, batches: Iterable[Batch], *, finish: Callable | None = None,
            batch_size: int | None = None
            ) -> Iterator[tuple[np.ndarray, Outputs | None, list[InputError]]]:
        """Outputs of every batch, in order: ``(indices, outputs, errors)``.

        A batch without images (every file of it unreadable under ``on_error="skip"``) yields
        ``None`` outputs with its errors. When ``batches`` raises (an unreadable file under
        ``on_error="raise"``), every batch computed before is yielded first, then the error
        propagates.

        Parameters
        ----------
        batches : iterable of Batch
            From :meth:`ImageSource.iter_batches <featclf.data.sources.ImageSource.iter_batches>`.
        finish : callable, optional
            Applied to each batch on the device before the forward.
        batch_size : int, optional
            The batches' size (``compile`` pads short ones to it).

        Yields
        ------
        indices : numpy.ndarray of int64
        outputs : numpy.ndarray, dict of numpy.ndarray, or None
            float32, C-contiguous, on the host.
        errors : list of InputError
        """
        model = None
        on_gpu = self.device.type == "cuda"
        pending = None
        batches = iter(batches)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except Exception:
                # The next batch failed (an unreadable file under on_error="raise"): hand out
                # the batch already computed first, so the caller can keep (store) it.
                if pending is not None:
                    held, pending = pending, None
                    yield _finish(*held)
                raise
            if len(batch.indices) == 0:
                ready, outputs = None, None
            else:
                if model is None:
                    model = self.network()
                outputs = self.forward(batch.images, finish=finish, batch_size=batch_size,
                                       model=model)
                ready = None
                if on_gpu:
                    outputs, ready = _copy_to_host(outputs)
            if pending is not None:
                yield _finish(*pending)
            pending = (batch.indices, outputs, batch.errors, ready)
        if pending is not None:
            yield _finish(*pending)


def _copy_to_host(outputs):
    """Start non-blocking copies into pinned host memory; an event marks their end."""
    def copy(t: torch.Tensor) -> torch.Tensor:
        host = torch.empty(t.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(t, non_blocking=True)
        return host

    host = {k: copy(v) for k, v in outputs.items()} if isinstance(outputs, dict) else \
        copy(outputs)
    ready = torch.cuda.Event()
    ready.record()
    return host, ready


def _finish(indices, outputs, errors, ready):
    if ready is not None:
        ready.synchronize()  # the copies from the GPU have landed in pinned host memory

    def host(t):
        return np.ascontiguousarray(t.cpu().numpy() if isinstance(t, torch.Tensor) else t,
                                    dtype=np.float32)

    if isinstance(outputs, dict):
        outputs = {k: host(v) for k, v in outputs.items()}
    elif outputs is not None:
        outputs = host(outputs)
    return np.asarray(indices, dtype=np.int64), outputs, errors
