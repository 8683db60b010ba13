"""How close DeepFeatureExtractor.transform comes to the bare network forward.

For each model (resnet18, resnet50 at 224 px by default) and device (the CPU, and CUDA when
present), three things run on the same images:

* bare: the headless network (``fc = nn.Identity``) in ``torch.inference_mode`` with the same
  memory layout (channels-last) and precision as the extractor, on pre-made model-ready
  tensors already on the device, batch after batch: the ceiling;
* extractor on tensors: ``transform`` of the same float ``(n, 3, 224, 224)`` tensor (model-ready,
  so no preprocessing; on a GPU the copy to the device is included);
* extractor on uint8: ``transform`` of uint8 ``(n, H, W, 3)`` images of ``--image-size`` pixels,
  the model's preprocessing (crop, scale, normalise; on a GPU, on the GPU) included.

Each round times the three back to back (in rotating order) on the same images; the ratios are
the medians of the per-round ratios, which holds up on a machine shared with other work.

Targets (PERFORMANCE.md): tensors >= 0.95x the bare forward, uint8 >= 0.9x. The table is printed
and saved with the machine's description as ``artifacts/benchmarks/extract_throughput.json``
(the shape ``benchmarks/common.py`` defines, read by ``run_all.py``).

Run ``python benchmarks/extract_throughput.py --quick`` (about a minute on 2 idle CPU cores;
the machines here are shared, so compare the ratios, which are measured interleaved).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import common
import numpy as np
import torch

from featclf.extract import DeepFeatureExtractor
from featclf.models import get_model, get_model_spec
from featclf.models.head import without_head

TARGET_TENSOR = 0.95
TARGET_UINT8 = 0.9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def bench_model(name: str, device: torch.device, *, batch_size: int, n_batches: int,
                repeats: int, image_size: int) -> dict:
    """Bare forward vs extractor (tensor and uint8 input) for one model on one device."""
    torch.manual_seed(0)
    n = batch_size * n_batches
    ext = DeepFeatureExtractor(name, device=device, batch_size=batch_size).fit()
    spec = get_model_spec(name)
    pre = ext.preprocess_
    rng = np.random.default_rng(0)
    uint8_images = rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8)
    ready_cpu = pre(torch.from_numpy(uint8_images).permute(0, 3, 1, 2))  # model-ready float

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the extractor's random weights: same network, same numbers
        bare = without_head(get_model(name), spec.head).eval()
    memory_format = torch.channels_last if ext.channels_last_ else torch.contiguous_format
    bare = bare.to(device, memory_format=memory_format)
    bare_batches = [ready_cpu[i:i + batch_size].to(device).contiguous(memory_format=memory_format)
                    for i in range(0, n, batch_size)]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(ext.precision_)

    def run_bare() -> None:
        with torch.inference_mode():
            for x in bare_batches:
                if dtype is None:
                    bare(x)
                else:
                    with torch.autocast(device.type, dtype=dtype):
                        bare(x)

    def run_tensor() -> None:
        ext.transform(ready_cpu)

    def run_uint8() -> None:
        ext.transform(uint8_images)

    # Warm-up: allocators, oneDNN/cuDNN algorithm choice, the weights' move to the device.
    with torch.inference_mode():
        bare(bare_batches[0])
    ext.transform(ready_cpu[:batch_size])
    ext.transform(uint8_images[:batch_size])
    check = np.abs(ext.transform(ready_cpu[:2]) - _bare_features(bare, bare_batches[0][:2],
                                                                  device, dtype)).max()

    runs = {"bare": run_bare, "extractor_tensor": run_tensor, "extractor_uint8": run_uint8}
    order = list(runs)
    times: dict[str, list[float]] = {k: [] for k in runs}
    # Inside each extractor call, the seconds spent in the network's forward (CPU only: on a
    # GPU the forward is asynchronous). total - forward = the extractor's own overhead, a
    # number that load from other processes hardly moves.
    in_forward = {"extractor_tensor": 0.0, "extractor_uint8": 0.0}
    clock: dict[str, float] = {}
    hooks = []
    if device.type == "cpu":
        hooks = [ext.feature_model_.register_forward_pre_hook(
                     lambda *_: clock.__setitem__("start", time.perf_counter())),
                 ext.feature_model_.register_forward_hook(
                     lambda *_: clock.__setitem__("spent", clock.get("spent", 0.0)
                                                  + time.perf_counter() - clock["start"]))]
    for r in range(repeats):
        # One round times all three on the same images, back to back and in rotating order, so
        # load from other processes hits them alike; the ratio of a round is what counts.
        for kind in order[r % 3:] + order[:r % 3]:
            clock["spent"] = 0.0
            times[kind].append(_timed(runs[kind], device))
            if kind in in_forward:
                in_forward[kind] += clock["spent"]
    for hook in hooks:
        hook.remove()
    overhead = {kind: (1 - spent / sum(times[kind])) if hooks else None
                for kind, spent in in_forward.items()}
    ratio = {kind: statistics.median(b / t for b, t in zip(times["bare"], times[kind]))
             for kind in ("extractor_tensor", "extractor_uint8")}
    rate = {k: n / statistics.median(v) for k, v in times.items()}
    return {
        "model": name,
        "device": str(device),
        "precision": ext.precision_,
        "channels_last": ext.channels_last_,
        "batch_size": batch_size,
        "n_images": n,
        "image_size_uint8": image_size,
        "bare_img_per_s": round(rate["bare"], 2),
        "extractor_tensor_img_per_s": round(rate["extractor_tensor"], 2),
        "extractor_uint8_img_per_s": round(rate["extractor_uint8"], 2),
        "ratio_tensor": round(ratio["extractor_tensor"], 3),
        "ratio_uint8": round(ratio["extractor_uint8"], 3),
        "ratio": "median over rounds of bare seconds / extractor seconds",
        "target_tensor": TARGET_TENSOR,
        "target_uint8": TARGET_UINT8,
        "meets_targets": bool(ratio["extractor_tensor"] >= TARGET_TENSOR
                              and ratio["extractor_uint8"] >= TARGET_UINT8),
        "overhead_share_tensor": None if overhead["extractor_tensor"] is None else
        round(overhead["extractor_tensor"], 4),
        "overhead_share_uint8": None if overhead["extractor_uint8"] is None else
        round(overhead["extractor_uint8"], 4),
        "overhead_share": "fraction of the extractor's time spent outside the network forward "
                          "(validation, preprocessing, layout, copies; CPU only)",
        "max_abs_diff_vs_bare": float(check),
        "seconds": {k: [round(t, 4) for t in v] for k, v in times.items()},
    }


def _bare_features(bare, x, device, dtype) -> np.ndarray:
    with torch.inference_mode():
        if dtype is None:
            return bare(x).float().cpu().numpy()
        with torch.autocast(device.type, dtype=dtype):
            return bare(x).float().cpu().numpy()


def print_table(rows: list[dict]) -> None:
    """The results as one aligned table on stdout."""
    table = [{"model": r["model"], "device": r["device"], "precision": r["precision"],
              "bare img/s": r["bare_img_per_s"], "tensor img/s": r["extractor_tensor_img_per_s"],
              "uint8 img/s": r["extractor_uint8_img_per_s"], "tensor/bare": r["ratio_tensor"],
              "uint8/bare": r["ratio_uint8"], "overhead t/u8": (
                  "-" if r["overhead_share_tensor"] is None else
                  f"{r['overhead_share_tensor']:.1%}/{r['overhead_share_uint8']:.1%}"),
              "targets": "met" if r["meets_targets"] else "MISSED"} for r in rows]
    common.print_table("DeepFeatureExtractor.transform vs the bare headless forward", table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 batch per call, 6 rounds (about a minute on 2 idle cores)")
    parser.add_argument("--smoke", action="store_true",
                        help="resnet18 only, tiny sizes: checks the script runs (numbers "
                        "meaningless)")
    parser.add_argument("--out-dir", type=Path, default=common.DEFAULT_OUT_DIR,
                        help="where extract_throughput.json goes (default artifacts/benchmarks)")
    parser.add_argument("--time-budget", type=float, default=None, metavar="S",
                        help="accepted for run_all.py; the sizes above already fit its budget")
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--batch-size", type=int, default=32, help="CPU batch size (32)")
    parser.add_argument("--gpu-batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=4, help="batches per timed call (4)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="rounds; each times bare, tensor and uint8 once (5)")
    parser.add_argument("--image-size", type=int, default=256,
                        help="side of the uint8 images (256: the ImageNet recipe only crops)")
    parser.add_argument("--devices", nargs="+", default=None,
                        help="default: cpu, plus cuda when available")
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    if args.quick:
        args.batches, args.repeats = 1, 6
    if args.smoke:
        args.models, args.batch_size, args.gpu_batch_size = ["resnet18"], 4, 8
        args.batches, args.repeats = 1, 2
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = []
    for device_name in devices:
        device = torch.device(device_name)
        batch_size = args.gpu_batch_size if device.type == "cuda" else args.batch_size
        for name in args.models:
            print(f"{name} on {device} ...", file=sys.stderr, flush=True)
            rows.append(bench_model(name, device, batch_size=batch_size,
                                    n_batches=args.batches, repeats=args.repeats,
                                    image_size=args.image_size))
    print_table(rows)
    config = {"batch_size_cpu": args.batch_size, "batch_size_gpu": args.gpu_batch_size,
              "batches": args.batches, "repeats": args.repeats, "devices": devices,
              "image_size_uint8": args.image_size, "model_input": 224,
              "timing": "rounds of bare/tensor/uint8 back to back in rotating order; ratios are "
                        "medians of the per-round ratios, img/s from median times",
              "bare": "headless model (fc=Identity), inference_mode, same channels_last and "
                      "precision, model-ready tensors already on the device",
              "load_avg_1m_at_start": load_at_start}
    headline = {}
    for r in rows:
        key = f"{r['model']} {r['device']}"
        headline[f"{key} extractor/bare (tensors)"] = r["ratio_tensor"]
        headline[f"{key} extractor/bare (uint8)"] = r["ratio_uint8"]
        headline[f"{key} extractor img_per_s (uint8)"] = r["extractor_uint8_img_per_s"]
        if r["overhead_share_uint8"] is not None:
            headline[f"{key} time outside the forward (uint8)"] = r["overhead_share_uint8"]
    path = common.write_json("extract_throughput",
                             {"mode": mode, "config": config, "results": rows,
                              "headline": headline}, args.out_dir)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
