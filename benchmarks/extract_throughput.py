"""How close DeepFeatureExtractor comes to the bare network forward: in memory and from JPEGs.

**In memory** (resnet18 and resnet50 at 224 px by default; the CPU, and CUDA when present),
across batch sizes. Three things run on the same images:

* bare: the headless network (``fc = nn.Identity``) in ``torch.inference_mode`` with the same
  memory layout (channels-last) and precision as the extractor, on model-ready tensors already
  on the device, batch after batch: the ceiling;
* extractor on tensors: ``transform`` of the same float ``(n, 3, 224, 224)`` tensor (model-ready,
  so no preprocessing; on a GPU the copy to the device is included);
* extractor on uint8: ``transform`` of uint8 ``(n, H, W, 3)`` images of ``--image-size`` pixels,
  the model's preprocessing (crop, scale, normalise; on a GPU, on the GPU) included.

**From a JPEG folder**: ``transform`` of a list of photo-like 500x375 JPEG files with 0 and 2
DataLoader workers against the bare forward on the same images (decoded beforehand), and
against the decode ceiling: featclf's per-image loader work (Pillow decode, uint8 resize and
crop) timed on one core, times ``max(1, workers)``. The limit of a job is the lower of the two
(with 0 workers, decoding and the forward take turns, so their times add); the output names it.

**compile=True** (``--compile``, on by default for resnet18): the extractor through
``torch.compile`` against the eager bare forward, compilation excluded (reported separately).

Each round times the contenders back to back (in rotating order) on the same images; ratios are
the medians of the per-round ratios, which holds up on a machine shared with other work.

Targets (PERFORMANCE.md): tensors >= 0.95x the bare forward, uint8 >= 0.9x, JPEG >= 0.9x the
lower of decode ceiling and forward. The tables are printed and saved with the machine's
description as ``artifacts/benchmarks/extract_throughput.json`` (the shape
``benchmarks/common.py`` defines, read by ``run_all.py``).

Run ``python benchmarks/extract_throughput.py --quick`` (about 2 minutes on 2 idle CPU cores;
compare the ratios, which are measured interleaved).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import common
import numpy as np
import torch
from decode_throughput import pillow_decode, write_jpegs

from featclf.extract import DeepFeatureExtractor
from featclf.models import load_network
from featclf.models.head import without_head

TARGET_TENSOR = 0.95
TARGET_UINT8 = 0.9
TARGET_JPEG = 0.9

SETTINGS = {
    # images per timed call; CPU and GPU batch sizes of the sweep; rounds; JPEG files, models,
    # worker counts and rounds; models compiled
    "full": dict(n_images=128, cpu_batches=(8, 16, 32, 64, 128), gpu_batches=(64, 128, 256, 512),
                 gpu_images=2048, repeats=5, jpeg_images=128, jpeg_models=("resnet18", "resnet50"),
                 workers=(0, 2), jpeg_repeats=3, compile_models=("resnet18", "resnet50")),
    "quick": dict(n_images=32, cpu_batches=(8, 32), gpu_batches=(128, 256), gpu_images=1024,
                  repeats=3, jpeg_images=64, jpeg_models=("resnet18",), workers=(0, 2),
                  jpeg_repeats=2, compile_models=("resnet18",)),
    "smoke": dict(n_images=4, cpu_batches=(2, 4), gpu_batches=(4,), gpu_images=8, repeats=1,
                  jpeg_images=4, jpeg_models=("resnet18",), workers=(0,), jpeg_repeats=1,
                  compile_models=()),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rounds(runs: dict[str, Callable[[], object]], repeats: int,
           device: torch.device) -> dict[str, list[float]]:
    """Per-round seconds of every contender (:func:`common.interleaved`: rotating order, so
    that load from other processes hits them alike; a GPU is synchronised around each call)."""
    timings = common.interleaved(runs, repeats, sync=lambda: _sync(device))
    return {kind: t.times for kind, t in timings.items()}


def ratio_to(times: dict[str, list[float]], ref: str, kind: str) -> float:
    """Median over rounds of ``ref`` seconds / ``kind`` seconds (>1: ``kind`` is faster)."""
    return statistics.median(b / t for b, t in zip(times[ref], times[kind]))


class Bare:
    """The headless network as a user would run it by hand, with the extractor's settings."""

    def __init__(self, name: str, ext: DeepFeatureExtractor) -> None:
        network = load_network(name, "random", seed=0)  # the extractor's weights: same numbers
        module = without_head(network.module, network.head).eval()
        self.memory_format = torch.channels_last if ext.channels_last_ else \
            torch.contiguous_format
        self.device = ext.device_
        self.module = module.to(self.device, memory_format=self.memory_format)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(ext.precision_)

    def batches(self, ready: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
        return [ready[i:i + batch_size].to(self.device).contiguous(
            memory_format=self.memory_format) for i in range(0, len(ready), batch_size)]

    def __call__(self, batches: list[torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            for x in batches:
                if self.dtype is None:
                    out = self.module(x)
                else:
                    with torch.autocast(self.device.type, dtype=self.dtype):
                        out = self.module(x)
        return out


def _forward_hooks(ext: DeepFeatureExtractor, clock: dict[str, float] | None = None
                   ) -> tuple[dict[str, float], list]:
    """Seconds spent inside the network's forward during extractor calls (CPU only: on a GPU
    the forward is asynchronous). total - forward = the extractor's own overhead, a number that
    load from other processes hardly moves."""
    clock = {"spent": 0.0} if clock is None else clock
    if ext.device_.type != "cpu":
        return clock, []
    model = ext.feature_model_
    return clock, [
        model.register_forward_pre_hook(lambda *_: clock.__setitem__("start",
                                                                     time.perf_counter())),
        model.register_forward_hook(lambda *_: clock.__setitem__(
            "spent", clock["spent"] + time.perf_counter() - clock["start"]))]


def bench_in_memory(name: str, device: torch.device, *, batch_size: int, n_images: int,
                    repeats: int, image_size: int) -> dict:
    """Bare forward vs extractor (tensor and uint8 input) for one model, device and batch size."""
    torch.manual_seed(0)
    ext = DeepFeatureExtractor(name, weights="random", device=device, batch_size=batch_size).fit()
    ready_ext = DeepFeatureExtractor(name, weights="random", device=device, batch_size=batch_size,
                                     preprocess=None).fit()  # model-ready tensors go in as is
    pre = ext.preprocess_
    rng = np.random.default_rng(0)
    uint8_images = rng.integers(0, 256, (n_images, image_size, image_size, 3), dtype=np.uint8)
    ready_cpu = pre(torch.from_numpy(uint8_images).permute(0, 3, 1, 2))  # model-ready float
    bare = Bare(name, ext)
    bare_batches = bare.batches(ready_cpu, batch_size)

    # Warm-up: allocators, oneDNN/cuDNN algorithm choice, the weights' move to the device.
    bare(bare_batches[:1])
    ready_ext.transform(ready_cpu[:batch_size])
    ext.transform(uint8_images[:batch_size])
    check = float(np.abs(ready_ext.transform(ready_cpu[:2])
                         - bare(bare.batches(ready_cpu[:2], 2)).float().cpu().numpy()).max())

    clock, hooks = _forward_hooks(ext)
    hooks += _forward_hooks(ready_ext, clock)[1]
    in_forward = {"extractor_tensor": 0.0, "extractor_uint8": 0.0}

    def counted(kind: str, fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> None:
            clock["spent"] = 0.0
            fn()
            in_forward[kind] += clock["spent"]
        return run

    times = rounds({"bare": lambda: bare(bare_batches),
                    "extractor_tensor": counted("extractor_tensor",
                                                lambda: ready_ext.transform(ready_cpu)),
                    "extractor_uint8": counted("extractor_uint8",
                                               lambda: ext.transform(uint8_images))},
                   repeats, device)
    for hook in hooks:
        hook.remove()
    overhead = {kind: round(1 - spent / sum(times[kind]), 4) if hooks else None
                for kind, spent in in_forward.items()}
    ratio = {kind: ratio_to(times, "bare", kind) for kind in in_forward}
    rate = {k: n_images / statistics.median(v) for k, v in times.items()}
    return {
        "model": name, "device": str(device), "precision": ext.precision_,
        "channels_last": ext.channels_last_, "batch_size": batch_size, "n_images": n_images,
        "image_size_uint8": image_size,
        "bare_img_per_s": round(rate["bare"], 2),
        "extractor_tensor_img_per_s": round(rate["extractor_tensor"], 2),
        "extractor_uint8_img_per_s": round(rate["extractor_uint8"], 2),
        "ratio_tensor": round(ratio["extractor_tensor"], 3),
        "ratio_uint8": round(ratio["extractor_uint8"], 3),
        "meets_targets": bool(ratio["extractor_tensor"] >= TARGET_TENSOR
                              and ratio["extractor_uint8"] >= TARGET_UINT8),
        "overhead_share_tensor": overhead["extractor_tensor"],
        "overhead_share_uint8": overhead["extractor_uint8"],
        "max_abs_diff_vs_bare": check,
        "seconds": {k: [round(t, 4) for t in v] for k, v in times.items()},
    }


def loader_rate_one_core(paths: list[str], ext: DeepFeatureExtractor, repeats: int) -> float:
    """Images/s of one DataLoader worker's work (decode + uint8 resize and crop), one thread."""
    geometry = getattr(ext.preprocess_, "geometry", ext.preprocess_)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        timing = common.time_call(lambda: [geometry(pillow_decode(p)) for p in paths],
                                  warmup=1, repeats=repeats)
    finally:
        torch.set_num_threads(threads)
    return len(paths) / timing.median


def bench_jpeg(name: str, device: torch.device, paths: list[str], *, batch_size: int,
               workers: tuple[int, ...], repeats: int) -> list[dict]:
    """``transform(paths)`` with each worker count vs the bare forward on the decoded images."""
    torch.manual_seed(0)
    ext = DeepFeatureExtractor(name, weights="random", device=device, batch_size=batch_size).fit()
    pre = ext.preprocess_
    ready = torch.stack([pre(pillow_decode(p)) for p in paths])
    bare = Bare(name, ext)
    bare_batches = bare.batches(ready, batch_size)
    decode_1core = loader_rate_one_core(paths, ext, repeats=max(2, repeats))
    extractors = {w: DeepFeatureExtractor(name, weights="random", device=device,
                                          batch_size=batch_size, num_workers=w).fit()
                  for w in workers}
    bare(bare_batches[:1])  # warm-up
    for e in extractors.values():
        e.transform(paths[:batch_size])
    check = float(np.abs(extractors[workers[0]].transform(paths[:2])
                         - bare(bare.batches(ready[:2], 2)).float().cpu().numpy()).max())
    runs: dict[str, Callable[[], object]] = {"bare": lambda: bare(bare_batches)}
    for w, e in extractors.items():
        runs[f"workers_{w}"] = lambda e=e: e.transform(paths)
    times = rounds(runs, repeats, device)
    n = len(paths)
    forward = n / statistics.median(times["bare"])
    rows = []
    for w in workers:
        measured = n / statistics.median(times[f"workers_{w}"])
        ceiling = decode_1core * max(1, w)
        if w == 0:  # one process: decode a batch, then run it; the times add up
            limit = 1.0 / (1.0 / decode_1core + 1.0 / forward)
            bottleneck = ("decode and forward in turn (main process); forward dominates"
                          if forward < decode_1core else
                          "decode and forward in turn (main process); decode dominates")
        else:
            limit = min(ceiling, forward)
            bottleneck = "forward" if forward <= ceiling else "decode"
        ratio_vs_bare = ratio_to(times, "bare", f"workers_{w}")
        rows.append({
            "model": name, "device": str(device), "workers": w, "batch_size": batch_size,
            "n_images": n, "bare_img_per_s": round(forward, 2),
            "decode_ceiling_img_per_s": round(ceiling, 2),
            "limit_img_per_s": round(limit, 2), "bottleneck": bottleneck,
            "extractor_img_per_s": round(measured, 2),
            "ratio_vs_bare": round(ratio_vs_bare, 3),
            "ratio_vs_limit": round(measured / limit, 3),
            "meets_target": bool(measured / limit >= TARGET_JPEG),
            "max_abs_diff_vs_bare": check,
            "seconds": [round(t, 4) for t in times[f"workers_{w}"]],
        })
    return rows


def bench_compile(name: str, device: torch.device, *, batch_size: int, n_images: int,
                  repeats: int) -> dict:
    """``compile=True`` extractor vs the eager bare forward on model-ready tensors."""
    torch.manual_seed(0)
    eager = DeepFeatureExtractor(name, weights="random", device=device, batch_size=batch_size,
                                 preprocess=None).fit()
    compiled = DeepFeatureExtractor(name, weights="random", device=device, batch_size=batch_size,
                                    preprocess=None, compile=True).fit()
    x = torch.randn(n_images, 3, 224, 224)
    bare = Bare(name, eager)
    bare_batches = bare.batches(x, batch_size)
    bare(bare_batches[:1])
    eager.transform(x[:batch_size])
    start = time.perf_counter()
    compiled.transform(x[:batch_size])  # compiles
    compile_s = time.perf_counter() - start
    diff = float(np.abs(compiled.transform(x[:4]) - eager.transform(x[:4])).max())
    times = rounds({"bare": lambda: bare(bare_batches), "eager": lambda: eager.transform(x),
                    "compiled": lambda: compiled.transform(x)}, repeats, device)
    return {"model": name, "device": str(device), "precision": eager.precision_,
            "batch_size": batch_size, "n_images": n_images,
            "compile_seconds": round(compile_s, 1),
            "compiled_img_per_s": round(n_images / statistics.median(times["compiled"]), 2),
            "eager_extractor_img_per_s": round(n_images / statistics.median(times["eager"]), 2),
            "bare_img_per_s": round(n_images / statistics.median(times["bare"]), 2),
            "compiled_over_bare": round(ratio_to(times, "bare", "compiled"), 3),
            "compiled_over_eager_extractor": round(ratio_to(times, "eager", "compiled"), 3),
            "max_abs_diff_vs_eager": diff,
            "break_even_images": _break_even(compile_s, times, n_images)}


def _break_even(compile_s: float, times: dict[str, list[float]], n: int) -> int | None:
    """Images after which compiling has paid for itself (None: it never does)."""
    saved_per_image = (statistics.median(times["eager"]) - statistics.median(times["compiled"])) / n
    return int(compile_s / saved_per_image) if saved_per_image > 0 else None


def print_tables(memory: list[dict], jpeg: list[dict], compiled: list[dict]) -> None:
    """The results as aligned tables on stdout."""
    common.print_table("In memory: DeepFeatureExtractor.transform vs the bare headless forward", [
        {"model": r["model"], "device": r["device"], "precision": r["precision"],
         "batch": r["batch_size"], "bare img/s": r["bare_img_per_s"],
         "tensor img/s": r["extractor_tensor_img_per_s"],
         "uint8 img/s": r["extractor_uint8_img_per_s"], "tensor/bare": r["ratio_tensor"],
         "uint8/bare": r["ratio_uint8"], "overhead t/u8": (
             "-" if r["overhead_share_tensor"] is None else
             f"{r['overhead_share_tensor']:.1%}/{r['overhead_share_uint8']:.1%}"),
         "targets": "met" if r["meets_targets"] else "MISSED"} for r in memory])
    if jpeg:
        common.print_table("From a JPEG folder: transform(paths) vs the limit", [
            {"model": r["model"], "device": r["device"], "workers": r["workers"],
             "bare img/s": r["bare_img_per_s"], "decode ceiling": r["decode_ceiling_img_per_s"],
             "limit": r["limit_img_per_s"], "extractor img/s": r["extractor_img_per_s"],
             "vs limit": r["ratio_vs_limit"], "vs bare": r["ratio_vs_bare"],
             "bottleneck": r["bottleneck"]} for r in jpeg])
    if compiled:
        common.print_table("compile=True vs eager", [
            {k: r[k] for k in ("model", "device", "batch_size", "compile_seconds",
                               "compiled_img_per_s", "eager_extractor_img_per_s",
                               "compiled_over_eager_extractor", "compiled_over_bare",
                               "break_even_images")} for r in compiled])


def headline_of(memory: list[dict], jpeg: list[dict], compiled: list[dict]) -> dict:
    """The numbers run_all puts in the README."""
    headline: dict[str, float | str | None] = {}
    for r in memory:
        key = f"{r['model']} {r['device']} batch {r['batch_size']}"
        headline[f"{key}: extractor/bare (tensors)"] = r["ratio_tensor"]
        headline[f"{key}: extractor/bare (uint8)"] = r["ratio_uint8"]
    for r in jpeg:
        key = f"{r['model']} {r['device']} JPEG, {r['workers']} workers"
        headline[f"{key}: extractor/limit"] = r["ratio_vs_limit"]
        headline[f"{key}: img/s (bottleneck: {r['bottleneck']})"] = r["extractor_img_per_s"]
    for r in compiled:
        headline[f"{r['model']} {r['device']} compile=True / eager extractor"] = \
            r["compiled_over_eager_extractor"]
    return headline


def findings(memory: list[dict], jpeg: list[dict], compiled: list[dict]) -> list[str]:
    """Plain-language conclusions."""
    out = []
    if memory:
        worst_t = min(memory, key=lambda r: r["ratio_tensor"])
        worst_u = min(memory, key=lambda r: r["ratio_uint8"])
        out.append(f"In memory, the extractor runs at >= {worst_t['ratio_tensor']:.2f}x the bare "
                   f"forward on model-ready tensors (worst: {worst_t['model']}, batch "
                   f"{worst_t['batch_size']}) and >= {worst_u['ratio_uint8']:.2f}x on uint8 "
                   f"images with preprocessing (worst: {worst_u['model']}, batch "
                   f"{worst_u['batch_size']}); targets {TARGET_TENSOR} and {TARGET_UINT8}.")
        for model in dict.fromkeys(r["model"] for r in memory):
            for device in dict.fromkeys(r["device"] for r in memory if r["model"] == model):
                rows = [r for r in memory if r["model"] == model and r["device"] == device]
                if len(rows) > 1:
                    best = max(rows, key=lambda r: r["extractor_uint8_img_per_s"])
                    out.append(f"{model} on {device}: fastest at batch {best['batch_size']} "
                               f"({best['extractor_uint8_img_per_s']:.0f} img/s from uint8).")
    for r in jpeg:
        out.append(f"{r['model']} from JPEGs with {r['workers']} workers: "
                   f"{r['extractor_img_per_s']:.0f} img/s, {r['ratio_vs_limit']:.2f}x the limit "
                   f"({r['limit_img_per_s']:.0f} img/s; bottleneck: {r['bottleneck']}) and "
                   f"{r['ratio_vs_bare']:.2f}x the bare forward.")
    by_model: dict[str, dict[int, dict]] = {}
    for r in jpeg:
        by_model.setdefault(f"{r['model']} {r['device']}", {})[r["workers"]] = r
    for key, rows in by_model.items():
        if 0 in rows and 2 in rows:
            gain = rows[2]["extractor_img_per_s"] / rows[0]["extractor_img_per_s"]
            cores, threads = os.cpu_count() or 1, torch.get_num_threads()
            if gain > 1.02:
                why = "decoding overlaps the forward"
            elif cores <= threads + 1:
                why = (f"2 worker processes and the forward's {threads} threads share {cores} "
                       "cores, and the forward's threads stall when one is descheduled; keep "
                       "the default num_workers=0 unless cores are free beyond the forward's")
            else:
                why = "decoding is too cheap next to the forward for workers to pay off"
            out.append(f"{key}: num_workers=2 is {gain:.2f}x num_workers=0 ({why}).")
    for r in compiled:
        if r["compiled_over_eager_extractor"] > 1.02:
            out.append(f"compile=True makes {r['model']} on {r['device']} "
                       f"{r['compiled_over_eager_extractor']:.2f}x faster after "
                       f"{r['compile_seconds']:.0f} s of compilation: worth it beyond about "
                       f"{r['break_even_images']} images.")
        else:
            out.append(f"compile=True gains nothing measurable for {r['model']} on "
                       f"{r['device']} ({r['compiled_over_eager_extractor']:.2f}x); keep the "
                       "default compile=False.")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer batch sizes, images and rounds (about 2 minutes on 2 idle "
                             "cores)")
    parser.add_argument("--smoke", action="store_true",
                        help="resnet18 only, tiny sizes: checks the script runs (numbers "
                        "meaningless)")
    parser.add_argument("--out-dir", type=Path, default=common.DEFAULT_OUT_DIR,
                        help="where extract_throughput.json goes (default artifacts/benchmarks)")
    parser.add_argument("--time-budget", type=float, default=None, metavar="S",
                        help="seconds this run may take (run_all passes it): later parts are "
                        "skipped, and say so, when it runs out")
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--image-size", type=int, default=256,
                        help="side of the uint8 images (256: the ImageNet recipe only crops)")
    parser.add_argument("--devices", nargs="+", default=None,
                        help="default: cpu, plus cuda when available")
    parser.add_argument("--no-jpeg", action="store_true", help="skip the JPEG-folder part")
    parser.add_argument("--no-compile", action="store_true", help="skip the compile=True part")
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    cfg = dict(SETTINGS[mode])
    if args.smoke:
        args.models = ["resnet18"]
    budget = args.time_budget or common._env_budget()
    deadline = time.perf_counter() + 0.85 * budget if budget else None
    skipped: list[str] = []

    def time_left() -> float:
        return float("inf") if deadline is None else deadline - time.perf_counter()

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    memory, jpeg, compiled = [], [], []
    for device_name in devices:
        device = torch.device(device_name)
        on_gpu = device.type == "cuda"
        batches = cfg["gpu_batches"] if on_gpu else cfg["cpu_batches"]
        n_images = cfg["gpu_images"] if on_gpu else cfg["n_images"]
        for name in args.models:
            for bs in batches:
                if time_left() < 15:
                    skipped.append(f"in memory {name} {device} batch {bs}: time budget spent")
                    continue
                print(f"in memory: {name} on {device}, batch {bs} ...", file=sys.stderr,
                      flush=True)
                memory.append(bench_in_memory(name, device, batch_size=bs,
                                              n_images=max(n_images, bs),
                                              repeats=cfg["repeats"],
                                              image_size=args.image_size))
        if not args.no_jpeg:
            jpeg_n = cfg["jpeg_images"] * (8 if on_gpu else 1)
            with tempfile.TemporaryDirectory(prefix="featclf-bench-jpeg-") as tmp:
                size = (80, 60) if args.smoke else (500, 375)
                paths = write_jpegs(Path(tmp), jpeg_n, size)
                for name in (m for m in cfg["jpeg_models"] if m in args.models):
                    if time_left() < 30:
                        skipped.append(f"JPEG {name} {device}: time budget spent")
                        continue
                    print(f"JPEG folder: {name} on {device} ...", file=sys.stderr, flush=True)
                    jpeg += bench_jpeg(name, device, paths,
                                       batch_size=max(batches) if on_gpu else 32,
                                       workers=cfg["workers"], repeats=cfg["jpeg_repeats"])
        if not args.no_compile:
            for name in (m for m in cfg["compile_models"] if m in args.models):
                if time_left() < 60:
                    skipped.append(f"compile {name} {device}: time budget spent")
                    continue
                print(f"compile=True: {name} on {device} ...", file=sys.stderr, flush=True)
                bs = 256 if on_gpu else 32
                compiled.append(bench_compile(name, device, batch_size=bs,
                                              n_images=bs * (4 if on_gpu else 1),
                                              repeats=cfg["repeats"]))
    print_tables(memory, jpeg, compiled)
    recs = findings(memory, jpeg, compiled)
    for s in skipped:
        recs.append(f"Not measured in this run: {s}.")
    print("\n" + "\n".join(f"- {r}" for r in recs))
    config = {**cfg, "models": args.models, "devices": devices,
              "image_size_uint8": args.image_size, "model_input": 224,
              "jpeg_size": [500, 375], "jpeg_batch_size_cpu": 32,
              "timing": "rounds of all contenders back to back in rotating order; ratios are "
                        "medians of the per-round ratios, img/s from median times",
              "bare": "headless model (fc=Identity), inference_mode, same channels_last and "
                      "precision, model-ready tensors already on the device",
              "decode_ceiling": "one core's rate of Pillow decode + uint8 resize/crop "
                                "(featclf's worker step) x max(1, workers)",
              "torch_threads": torch.get_num_threads(),
              "load_avg_1m_at_start": load_at_start}
    path = common.write_json("extract_throughput", {
        "mode": mode, "config": config,
        "results": {"in_memory": memory, "jpeg_folder": jpeg, "compile": compiled},
        "headline": headline_of(memory, jpeg, compiled),
        "recommendations": recs, "skipped_parts": skipped}, args.out_dir)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
