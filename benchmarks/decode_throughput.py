"""JPEG decode + preprocessing throughput per core, against the bare forward: name the bottleneck.

What a JPEG extraction job on this machine is limited by. Per image, single process, one torch
thread (what a DataLoader worker gets):

* ``pillow+featclf``: featclf's actual path, ``featclf.data.decode.decode_image`` (Pillow) then
  the model's ``ImagePreprocess`` (shorter side 256, centre crop 224, normalise);
* ``torchvision.io+v2``: ``torchvision.io.decode_jpeg`` then ``transforms.v2`` (uint8 resize
  256, centre crop 224, to float, normalise);
* the two cross combinations and decode alone, to tell the decoder's share from the transforms'.

Then the bare forward of alexnet, resnet18 and resnet50 (batch 32, 224 px, channels_last,
inference_mode, 2 threads, random weights) and, for 0 and 2 DataLoader workers, the decode
ceiling (workers x single-core rate; 0 workers decode in the main process at one core's rate)
against the forward: the lower one is the bottleneck. A short end-to-end run through featclf's
own ``FileSource.iter_batches`` + forward checks the estimate.

Run: ``python benchmarks/decode_throughput.py [--quick | --smoke] [--out-dir DIR]``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import common
import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms import v2

from featclf.data.decode import decode_image
from featclf.data.inputs import as_image_source
from featclf.data.transforms import ImagePreprocess
from featclf.models import load_network

# Measured, not used by featclf: keep torchvision 0.29's deprecation notice out of the table.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities",
                        category=DeprecationWarning)

NAME = "decode_throughput"
MODELS = ("alexnet", "resnet18", "resnet50")
WORKERS = (0, 2)
# Bare forward img/s on these machines when idle (PERFORMANCE.md: batch 32, 224 px, fp32,
# 2 threads). The machines are shared: when this run's forward is slowed by other work, the
# bottleneck against these figures is the one an idle machine would have.
REFERENCE_FORWARD_IMG_S = {"alexnet": 222.0, "resnet18": 64.0, "resnet50": 21.0}
# Share of the time budget kept for the end-to-end check (run_all passes the budget).
E2E_SHARE = 0.25
# A decoder/transform is worth switching to when it is at least this much faster.
WORTH_SWITCHING = 1.2

SETTINGS = {
    # images, (width, height), timed passes over the images, forward batch/size/repeats,
    # models checked end to end, images in the end-to-end run
    "full": dict(n_images=64, image_size=(500, 375), repeats=5, batch=32, px=224,
                 forward_repeats=5, e2e_models=("alexnet", "resnet18"), e2e_images=128,
                 n_photos=8, photo_size=(4032, 3024)),
    "quick": dict(n_images=64, image_size=(500, 375), repeats=3, batch=32, px=224,
                  forward_repeats=2, e2e_models=("alexnet",), e2e_images=64,
                  n_photos=4, photo_size=(4032, 3024)),
    "smoke": dict(n_images=4, image_size=(80, 60), repeats=1, batch=2, px=64,
                  forward_repeats=1, e2e_models=("alexnet",), e2e_images=4,
                  n_photos=1, photo_size=(800, 600)),
}


def photo_like(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A random image that compresses like a photo: smooth colour fields plus sensor grain.

    Pure noise compresses ~10x worse than photos and makes JPEG decode look slower than it is;
    bicubic-upsampled coarse noise gives smooth regions and edges, the grain high frequencies.
    """
    cell = int(rng.integers(8, 40))
    coarse = rng.integers(0, 256, size=(height // cell + 2, width // cell + 2, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    grain = rng.normal(0.0, 4.0, size=smooth.shape)
    return Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))


def write_jpegs(directory: Path, n: int, size: tuple[int, int], seed: int = 0) -> list[str]:
    """Write ``n`` photo-like JPEGs (quality 90) into ``directory``; return their paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = directory / f"photo_{i:03d}.jpg"
        photo_like(rng, *size).save(path, quality=90)
        paths.append(str(path))
    return paths


def v2_transform(pre: ImagePreprocess) -> v2.Compose:
    """torchvision v2 equivalent of ``pre``: resize and crop in uint8, then float + normalise."""
    return v2.Compose([v2.Resize(pre.resize, antialias=True), v2.CenterCrop(pre.output_size),
                       v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(list(pre.mean), list(pre.std))])


def pillow_decode(path: str) -> torch.Tensor:
    """featclf's decoder: ``(C, H, W)`` uint8."""
    return torch.from_numpy(decode_image(path)).permute(2, 0, 1)


def torchvision_decode(path: str) -> torch.Tensor:
    """torchvision's libjpeg-turbo decoder, with EXIF orientation like featclf's."""
    return decode_jpeg(read_file(path), mode=ImageReadMode.RGB, apply_exif_orientation=True)


def measure_decoding(paths: list[str], pre: ImagePreprocess, repeats: int) -> dict:
    """ms/img and img/s of each decode/transform combination over ``paths`` (one thread)."""
    tv = v2_transform(pre)
    pipelines = {
        "pillow+featclf": lambda p: pre(pillow_decode(p)),
        "torchvision.io+v2": lambda p: tv(torchvision_decode(p)),
        "pillow+v2": lambda p: tv(pillow_decode(p)),
        "torchvision.io+featclf": lambda p: pre(torchvision_decode(p)),
        "pillow decode only": pillow_decode,
        "torchvision.io decode only": torchvision_decode,
    }
    out = {}
    for name, fn in pipelines.items():
        timing = common.time_call(lambda fn=fn: [fn(p) for p in paths], warmup=1,
                                  repeats=repeats)
        ms = timing.median / len(paths) * 1e3
        out[name] = {"ms_per_img": ms, "img_per_s": 1e3 / ms, "spread": timing.spread}
    # The two full paths must agree (decoders and uint8-vs-float resizing round differently).
    diffs = [float((pre(pillow_decode(p)) - tv(torchvision_decode(p))).abs().mean())
             for p in paths]
    out["mean_abs_diff_normalised"] = statistics.fmean(diffs)
    return out


def measure_camera_photos(directory: Path, n: int, size: tuple[int, int], pre: ImagePreprocess,
                          repeats: int) -> dict:
    """Camera-sized JPEGs (12 MP): featclf's per-image work at full size and with
    ``jpeg_draft`` (libjpeg's reduced-scale decode down to twice the resize target), one thread."""
    paths = write_jpegs(directory, n, size, seed=7)
    side = 2 * (pre.resize or max(pre.output_size))
    out: dict = {"width": size[0], "height": size[1],
                 "mean_jpeg_kb": statistics.fmean(os.path.getsize(p) for p in paths) / 1024,
                 "draft_side": side}
    for label, draft in (("full_decode", None), ("jpeg_draft", side)):
        def work(draft=draft) -> None:
            for p in paths:
                pre(torch.from_numpy(decode_image(p, draft=draft)).permute(2, 0, 1))
        timing = common.time_call(work, warmup=1, repeats=repeats)
        out[f"{label}_ms_per_img"] = timing.median / n * 1e3
    out["draft_speedup"] = out["full_decode_ms_per_img"] / out["jpeg_draft_ms_per_img"]
    return out


def measure_forward(name: str, batch: int, px: int, repeats: int,
                    seconds_left: float | None = None) -> dict:
    """Bare forward img/s of ``name`` (random weights) at ``batch`` x 3 x ``px`` x ``px``.

    With ``seconds_left``, fewer repeats (at least one) when the warm-up batch says the
    requested ones would not fit.
    """
    model = load_network(name, "random").module.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, px, px).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        start = time.perf_counter()
        model(x)  # warm-up: oneDNN builds its kernels on the first call
        warm = time.perf_counter() - start
        if seconds_left is not None:
            repeats = max(1, min(repeats, int(seconds_left / max(warm, 1e-6))))
        timing = common.time_call(lambda: model(x), warmup=0, repeats=repeats)
    return {"img_per_s": batch / timing.median, "ms_per_batch": timing.median * 1e3,
            "spread": timing.spread, "repeats": repeats}


def measure_end_to_end(name: str, paths: list[str], batch: int, workers: int) -> float:
    """img/s of featclf's FileSource.iter_batches (decode + preprocess) feeding the bare forward."""
    network = load_network(name, "random")
    model = network.module.to(memory_format=torch.channels_last)
    source = as_image_source(paths)
    size = network.preprocess.output_size
    with torch.inference_mode():
        # Warm up (first calls build oneDNN kernels), so the run measures the steady state.
        model(torch.randn(batch, 3, *size).contiguous(memory_format=torch.channels_last))
        start = time.perf_counter()
        for b in source.iter_batches(batch_size=batch, preprocess=network.preprocess,
                                     num_workers=workers):
            model(b.images.contiguous(memory_format=torch.channels_last))
        elapsed = time.perf_counter() - start
    return len(paths) / elapsed


def bottlenecks(decode: dict, forward: dict, cores: int, threads: int) -> list[dict]:
    """For each model, path and worker count: the decode ceiling vs the forward.

    ``decode_ceiling`` is ``max(1, workers) x`` the single-core rate. Because workers and the
    forward share the same cores here, ``shared_cpu_estimate`` is what both together allow:
    each image costs ``1/d`` core-seconds of decoding and ``threads/f`` of forward.
    """
    rows = []
    for model, fwd in forward.items():
        f = fwd["img_per_s"]
        for path in ("pillow+featclf", "torchvision.io+v2"):
            d = decode[path]["img_per_s"]
            for k in WORKERS:
                ceiling = max(1, k) * d
                if k == 0:  # decode and forward take turns in one process
                    estimate = 1.0 / (1.0 / d + 1.0 / f)
                else:
                    estimate = min(ceiling, f, cores / (1.0 / d + threads / f))
                rows.append({
                    "model": model, "decode_path": path, "workers": k,
                    "decode_ceiling_img_s": ceiling, "forward_img_s": f,
                    "bottleneck": "decode" if ceiling < f else "forward",
                    "ceiling_over_forward": ceiling / f,
                    "shared_cpu_estimate_img_s": estimate,
                    "extract_target_img_s": 0.9 * min(ceiling, f),
                })
    return rows


def _torchvision_io_deprecated() -> bool:
    """torchvision 0.29 deprecated torchvision.io's image decoding (superseded by TorchCodec)."""
    major, minor = (int(part) for part in torchvision.__version__.split(".")[:2])
    return (major, minor) >= (0, 29)


def recommendations(decode: dict, rows: list[dict], end_to_end: list[dict]) -> list[str]:
    """Plain-language conclusions from the measurements."""
    out = []
    pil, tv = decode["pillow decode only"], decode["torchvision.io decode only"]
    speed = pil["ms_per_img"] / tv["ms_per_img"]
    if speed >= WORTH_SWITCHING:
        text = (f"torchvision.io.decode_jpeg decodes JPEG {speed:.2f}x faster than Pillow here "
                f"({tv['ms_per_img']:.2f} vs {pil['ms_per_img']:.2f} ms/img; both wrap "
                "libjpeg-turbo and give identical pixels).")
        if _torchvision_io_deprecated():
            text += (f" torchvision {torchvision.__version__} deprecates its image decoders in "
                     "favour of the separate TorchCodec package, so featclf keeps Pillow.")
        else:
            text += (" featclf.data.decode could use it for plain JPEGs, keeping Pillow for "
                     "the rest.")
        out.append(text)
    elif speed * WORTH_SWITCHING <= 1:
        out.append(f"Pillow decodes JPEG faster than torchvision.io here ({1 / speed:.2f}x): "
                   "keep Pillow.")
    else:
        out.append(f"Pillow and torchvision.io decode JPEG at similar speed here ({speed:.2f}x): "
                   "no reason to switch decoders.")
    featclf_tf = decode["pillow+featclf"]["ms_per_img"] - pil["ms_per_img"]
    v2_tf = decode["pillow+v2"]["ms_per_img"] - pil["ms_per_img"]
    if v2_tf > 0 and featclf_tf / v2_tf >= WORTH_SWITCHING:
        out.append(
            f"ImagePreprocess costs {featclf_tf:.2f} ms/img against {v2_tf:.2f} for the same "
            f"recipe in v2 transforms ({featclf_tf / v2_tf:.1f}x): worth a look in "
            "featclf.data.transforms.")
    else:
        out.append(
            f"ImagePreprocess costs {featclf_tf:.2f} ms/img, v2 transforms {v2_tf:.2f} for the "
            "same recipe (resize and crop in uint8, then float and normalise): on par.")
    whole = decode["pillow+featclf"]["ms_per_img"] / decode["torchvision.io+v2"]["ms_per_img"]
    out.append(f"Whole per-image path: torchvision.io+v2 is {whole:.2f}x featclf's "
               "Pillow+ImagePreprocess rate.")
    for k in WORKERS:
        bound = sorted({r["model"] for r in rows if r["workers"] == k
                        and r["decode_path"] == "pillow+featclf" and r["bottleneck"] == "decode"})
        free = sorted({r["model"] for r in rows if r["workers"] == k
                       and r["decode_path"] == "pillow+featclf" and r["bottleneck"] == "forward"})
        out.append(f"With {k} DataLoader workers and featclf's decoder, decode-bound: "
                   f"{', '.join(bound) or 'none'}; forward-bound: {', '.join(free) or 'none'}.")
    d = decode["pillow+featclf"]["img_per_s"]
    for k in WORKERS:
        bound = [m for m, f in REFERENCE_FORWARD_IMG_S.items() if max(1, k) * d < f]
        out.append(f"Against PERFORMANCE.md's idle-machine forward rates "
                   f"({', '.join(f'{m} {f:g}' for m, f in REFERENCE_FORWARD_IMG_S.items())} "
                   f"img/s), featclf's decoder at {d:.0f} img/s per core with {k} workers "
                   f"would make {', '.join(bound) or 'none'} decode-bound.")
    for model in dict.fromkeys(r["model"] for r in end_to_end):
        rate = {r["workers"]: r["img_per_s"] for r in end_to_end if r["model"] == model}
        if 0 in rate and 2 in rate:
            gain = rate[2] / rate[0]
            why = ("the workers compete with the forward's threads for the same cores"
                   if gain < 1 else "decoding overlaps the forward")
            out.append(f"Measured {model} from JPEG through FileSource.iter_batches: 2 workers "
                       f"{rate[2]:.0f} img/s vs 0 workers {rate[0]:.0f} img/s ({gain:.2f}x; "
                       f"{why}).")
    return out


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    cfg = SETTINGS[args.mode]
    # Finish within run_all's budget (80 % of it, leaving room for start-up and writing).
    deadline = (time.perf_counter() + 0.8 * args.time_budget) if args.time_budget else None
    cores = os.cpu_count() or 1
    threads = max(1, min(2, cores))
    pre = load_network("resnet18", "random").preprocess
    if args.mode == "smoke":  # same recipe, scaled to the tiny images
        pre = ImagePreprocess(size=cfg["px"], channels=3, mean=pre.mean, std=pre.std,
                              resize=cfg["px"] + cfg["px"] // 7)
    with tempfile.TemporaryDirectory(prefix="featclf-bench-jpeg-") as tmp:
        paths = write_jpegs(Path(tmp), cfg["n_images"], cfg["image_size"])
        mean_kb = statistics.fmean(os.path.getsize(p) for p in paths) / 1024
        torch.set_num_threads(1)  # per-core rate, as in a DataLoader worker
        decode = measure_decoding(paths, pre, cfg["repeats"])
        photos_dir = Path(tmp) / "camera"
        photos_dir.mkdir()
        photos = measure_camera_photos(photos_dir, cfg["n_photos"], cfg["photo_size"], pre,
                                       max(1, cfg["repeats"] - 1))
        torch.set_num_threads(threads)
        forward = {}
        for i, m in enumerate(MODELS):
            # Within run_all's budget: split what is left (minus the end-to-end share) evenly.
            share = None if deadline is None else max(0.0, (
                deadline - time.perf_counter()) * (1 - E2E_SHARE) / (len(MODELS) - i))
            forward[m] = measure_forward(m, cfg["batch"], cfg["px"], cfg["forward_repeats"],
                                         share)
        e2e_paths = (paths * (cfg["e2e_images"] // len(paths) + 1))[: cfg["e2e_images"]]
        end_to_end = []
        if deadline is not None and deadline - time.perf_counter() < E2E_SHARE * args.time_budget:
            e2e_skipped = "skipped: the time budget was nearly spent"
            print(f"end-to-end check {e2e_skipped}", flush=True)
        else:
            e2e_skipped = None
            for m in cfg["e2e_models"]:
                for k in WORKERS:
                    end_to_end.append({"model": m, "workers": k, "img_per_s":
                                       measure_end_to_end(m, e2e_paths, cfg["batch"], k)})
    rows = bottlenecks(decode, forward, cores, threads)
    for r in end_to_end:
        match = next(x for x in rows if x["model"] == r["model"] and x["workers"] == r["workers"]
                     and x["decode_path"] == "pillow+featclf")
        r["estimate_img_s"] = match["shared_cpu_estimate_img_s"]
        r["measured_over_estimate"] = r["img_per_s"] / r["estimate_img_s"]

    common.print_table("Per-image decode + preprocess (1 thread)",
                       [{"path": k, **v} for k, v in decode.items() if isinstance(v, dict)],
                       ["path", "ms_per_img", "img_per_s", "spread"])
    common.print_table(f"Bare forward, batch {cfg['batch']}, {cfg['px']} px, {threads} threads",
                       [{"model": k, **v} for k, v in forward.items()],
                       ["model", "img_per_s", "ms_per_batch", "spread"])
    common.print_table("Bottleneck per model and worker count", rows,
                       ["model", "decode_path", "workers", "decode_ceiling_img_s",
                        "forward_img_s", "bottleneck", "shared_cpu_estimate_img_s"])
    if end_to_end:
        common.print_table("End to end: FileSource.iter_batches + bare forward", end_to_end)
    recs = recommendations(decode, rows, end_to_end)
    r18 = forward["resnet18"]["img_per_s"]
    for label in ("full_decode", "jpeg_draft"):
        # One core decoding vs the forward on all cores: which one limits a resnet18 job.
        photos[f"{label}_resnet18_bottleneck"] = \
            "decode" if photos[f"{label}_ms_per_img"] > 1e3 / r18 else "forward"
    recs.append(
        f"Camera photos ({photos['width']}x{photos['height']}, "
        f"{photos['mean_jpeg_kb']:.0f} KB): decode + preprocess costs "
        f"{photos['full_decode_ms_per_img']:.0f} ms/img at full size and "
        f"{photos['jpeg_draft_ms_per_img']:.0f} ms with jpeg_draft=True "
        f"({photos['draft_speedup']:.1f}x), against {1e3 / r18:.0f} ms/img for resnet18's "
        f"forward: a resnet18 job over such photos is limited by the "
        f"{photos['full_decode_resnet18_bottleneck']} at full size and by the "
        f"{photos['jpeg_draft_resnet18_bottleneck']} with jpeg_draft.")
    print("\n" + "\n".join(f"- {r}" for r in recs))

    pil_rate = decode["pillow+featclf"]["img_per_s"]
    headline = {
        "featclf (Pillow) decode+preprocess ms/img": decode["pillow+featclf"]["ms_per_img"],
        "torchvision.io+v2 decode+preprocess ms/img": decode["torchvision.io+v2"]["ms_per_img"],
        "torchvision.io / Pillow decode-only speedup":
            decode["pillow decode only"]["ms_per_img"]
            / decode["torchvision.io decode only"]["ms_per_img"],
        "torchvision.io+v2 / featclf whole-path speedup":
            decode["pillow+featclf"]["ms_per_img"] / decode["torchvision.io+v2"]["ms_per_img"],
        "camera photo decode+preprocess ms/img, full size": photos["full_decode_ms_per_img"],
        "camera photo decode+preprocess ms/img, jpeg_draft": photos["jpeg_draft_ms_per_img"],
    }
    for r in end_to_end:
        headline[f"{r['model']} from JPEG, {r['workers']} workers, measured img/s"] = \
            r["img_per_s"]
    for m, fwd in forward.items():
        headline[f"{m}: featclf decode on 1 core / forward img/s (<1: decode-bound)"] = \
            pil_rate / fwd["img_per_s"]
    path = common.write_json(NAME, {
        "mode": args.mode,
        "config": {**cfg, "models": list(MODELS), "workers": list(WORKERS),
                   "mean_jpeg_kb": mean_kb, "preprocess": pre.to_dict(),
                   "decode_threads": 1, "forward_threads": threads,
                   "torchvision_image_backend": torchvision.get_image_backend()},
        "results": {"decode": decode, "forward": forward, "bottleneck": rows,
                    "end_to_end": end_to_end, "end_to_end_skipped": e2e_skipped,
                    "camera_photos": photos},
        "headline": headline,
        "recommendations": recs,
    }, args.out_dir)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
