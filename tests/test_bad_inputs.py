"""Bad inputs, built for real: each gives a clear error naming the culprit, or is converted right.

Covers image files (decode), arrays and tensors (validation before any model work), and
weights/checkpoints (safe loading). The number of cases is printed at the end of the run.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imagefile_helpers import write_image
from PIL import Image

from featclf.data import ImagePreprocess, as_image_source, decode_image
from featclf.data.decode import ImageDecodeError
from featclf.data.inputs import check_labels
from featclf.models import WeightsError, get_model, save_checkpoint

pytestmark = pytest.mark.bad_input


def _jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


# ---------------------------------------------------------------- image files


def test_truncated_jpeg_names_file_and_reason(tmp_path):
    data = _jpeg_bytes(Image.effect_noise((64, 64), 40).convert("RGB"))
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match=r"truncated\.jpg.*truncated or damaged"):
        decode_image(path)


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageDecodeError, match=r"empty\.png.*empty file \(0 bytes\)"):
        decode_image(tmp_path / "empty.png")


def test_text_file_with_image_extension(tmp_path):
    (tmp_path / "notes.jpg").write_text("these are not pixels\n" * 20)
    with pytest.raises(ImageDecodeError, match=r"notes\.jpg.*not an image file"):
        decode_image(tmp_path / "notes.jpg")


def test_unsupported_format_pdf_renamed_to_tif(tmp_path):
    (tmp_path / "scan.tif").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF")
    with pytest.raises(ImageDecodeError, match=r"scan\.tif.*not an image file, or a format"):
        decode_image(tmp_path / "scan.tif")


def test_missing_file(tmp_path):
    with pytest.raises(ImageDecodeError, match=r"gone\.png.*file not found"):
        decode_image(tmp_path / "gone.png")


def test_directory_named_like_an_image(tmp_path):
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(ImageDecodeError, match="is a directory"):
        decode_image(tmp_path / "folder.jpg")


def test_cmyk_jpeg_becomes_rgb_with_the_right_colour(tmp_path):
    (tmp_path / "cmyk.jpg").write_bytes(_jpeg_bytes(Image.new("CMYK", (8, 8), (0, 255, 255, 0))))
    pixels = decode_image(tmp_path / "cmyk.jpg")
    assert pixels.shape == (8, 8, 3)
    r, g, b = pixels[4, 4].astype(int)
    assert r > 230 and g < 30 and b < 30  # CMYK (0, 100%, 100%, 0) is red


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 32768], [65535, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    pixels = decode_image(tmp_path / "deep.png")
    assert pixels.shape == (2, 2, 1)
    assert pixels[:, :, 0].tolist() == [[0, 128], [255, 255]]


def test_palette_png_keeps_its_colours(tmp_path):
    img = Image.new("P", (4, 4))
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.putpixel((1, 1), 1)
    img.save(tmp_path / "palette.png")
    pixels = decode_image(tmp_path / "palette.png")
    assert pixels.shape == (4, 4, 3)
    assert pixels[1, 1].tolist() == [10, 200, 30] and pixels[0, 0].tolist() == [0, 0, 0]


def test_rgba_is_composited_on_white(tmp_path):
    Image.new("RGBA", (3, 3), (255, 0, 0, 128)).save(tmp_path / "alpha.png")
    r, g, b = decode_image(tmp_path / "alpha.png")[1, 1].astype(int)
    assert r == 255 and 120 <= g <= 135 and 120 <= b <= 135


def test_exif_rotated_photo_is_turned_upright(tmp_path):
    img = Image.new("RGB", (20, 10), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    (tmp_path / "rotated.jpg").write_bytes(_jpeg_bytes(img, exif=exif.tobytes()))
    assert decode_image(tmp_path / "rotated.jpg").shape == (20, 10, 3)


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("L", (6, 6), v) for v in (50, 200, 90)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    pixels = decode_image(tmp_path / "anim.gif")
    assert int(np.median(pixels)) in range(45, 56)


def test_decompression_bomb_refused_and_limit_configurable(tmp_path):
    Image.new("L", (2000, 1500)).save(tmp_path / "huge.png")  # compresses to a few KB
    with pytest.raises(ImageDecodeError, match=r"huge\.png.*3,000,000 pixels exceeds"):
        decode_image(tmp_path / "huge.png", max_pixels=1_000_000)
    assert decode_image(tmp_path / "huge.png", max_pixels=None).shape == (1500, 2000, 1)


def test_one_pixel_image_is_decoded_and_resized():
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), (255, 255, 255)).save(buf, "PNG")
    pixels = decode_image(buf.getvalue())
    assert pixels.shape == (1, 1, 3)
    pre = ImagePreprocess(size=28, channels=1, mean=(0.0,), std=(1.0,))
    out = pre(torch.from_numpy(pixels).permute(2, 0, 1))
    assert out.shape == (1, 28, 28) and torch.allclose(out, torch.ones_like(out), atol=1e-3)


def test_grey_with_alpha_and_1_bit_images(tmp_path):
    Image.new("LA", (4, 4), (100, 255)).save(tmp_path / "la.png")
    Image.new("1", (4, 4), 1).save(tmp_path / "bw.png")
    assert decode_image(tmp_path / "la.png")[0, 0].tolist() == [100, 100, 100]
    assert decode_image(tmp_path / "bw.png")[0, 0].tolist() == [255]


# ---------------------------------------------------------------- arrays and tensors


@pytest.mark.parametrize("bad,needle", [
    (np.full((2, 8, 8), np.nan, dtype=np.float32), "NaN or infinity"),
    (np.full((2, 8, 8), np.inf), "NaN or infinity"),
    (np.zeros(5, dtype=np.uint8), "1 dimensions"),
    (np.zeros((2, 1, 8, 8, 3), dtype=np.uint8), "5 dimensions"),
    (np.zeros((2, 5, 8, 8), dtype=np.uint8), "channel axis of size 1 or 3"),
    (np.zeros((0, 8, 8), dtype=np.uint8), "empty"),
    (np.empty((2, 8, 8), dtype=object), "object array"),
    (np.full((2, 8, 8), 300, dtype=np.int32), "0-255"),
    (np.zeros((3, 10), dtype=np.float32), "flattened square"),
    (np.zeros((2, 8, 8), dtype=bool), "dtype bool"),
    (torch.full((2, 1, 8, 8), float("nan")), "NaN or infinity"),
    (["a.png", 3], "mixes file paths"),
    ({"not": "images"}, "not an image input"),
], ids=["nan", "inf", "rank1", "rank5", "five-channels", "empty", "object", "int-300",
        "non-square-2d", "bool", "tensor-nan", "mixed-list", "dict"])
def test_bad_arrays_raise_value_error_before_model_work(bad, needle):
    with pytest.raises(ValueError, match=needle):
        as_image_source(bad)


def test_mismatched_lengths_of_x_and_y():
    with pytest.raises(ValueError, match="X has 4 images but y has 3 labels"):
        check_labels([0, 1, 2], 4)


# ---------------------------------------------------------------- models and weights


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(ValueError, match="Did you mean 'seed_cnn'"):
        get_model("seedcnn")


def test_checkpoint_for_another_architecture_lists_keys(tmp_path):
    save_checkpoint(tmp_path / "lenet.pt", get_model("lenet5").state_dict())
    with pytest.raises(WeightsError, match=r"do not fit SeedCNN: missing keys: conv1\.0\.bias"):
        get_model("seed_cnn", weights=tmp_path / "lenet.pt")


def test_checkpoint_with_pickled_payload_never_runs_it(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "innocent-looking.pth"
    torch.save({"weights": torch.zeros(2), "extra": Payload()}, path)
    with pytest.raises(WeightsError, match=r"innocent-looking\.pth: refused to load"):
        get_model("lenet5", weights=path)
    assert not marker.exists()


def test_truncated_checkpoint(tmp_path):
    full = tmp_path / "full.pt"
    save_checkpoint(full, get_model("lenet5").state_dict())
    cut = tmp_path / "cut.pt"
    cut.write_bytes(full.read_bytes()[:2000])
    with pytest.raises(WeightsError, match=r"cut\.pt: not a readable PyTorch checkpoint"):
        get_model("lenet5", weights=cut)


def test_truncated_safetensors(tmp_path):
    full = tmp_path / "full.safetensors"
    save_checkpoint(full, get_model("lenet5").state_dict())
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(full.read_bytes()[:500])
    with pytest.raises(WeightsError, match=r"cut\.safetensors: not a readable safetensors"):
        get_model("lenet5", weights=cut)


def test_safetensors_with_wrong_shapes(tmp_path):
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in get_model("lenet5").state_dict().items()}
    state["f6.0.weight"] = torch.zeros(84, 99)
    save_file(state, tmp_path / "wrong.safetensors")
    with pytest.raises(WeightsError, match=r"f6\.0\.weight: file \(84, 99\) vs model \(84, 120\)"):
        get_model("lenet5", weights=tmp_path / "wrong.safetensors")


def test_checkpoint_saved_for_another_zoo_model(tmp_path):
    save_checkpoint(tmp_path / "seed.pt", get_model("seed_cnn").state_dict(),
                    {"model": "seed_cnn"})
    with pytest.raises(WeightsError, match="is a checkpoint of model 'seed_cnn', not 'lenet5'"):
        get_model("lenet5", weights=tmp_path / "seed.pt")


def test_empty_and_missing_weight_files(tmp_path):
    (tmp_path / "zero.pt").write_bytes(b"")
    with pytest.raises(WeightsError, match="is empty"):
        get_model("lenet5", weights=tmp_path / "zero.pt")
    with pytest.raises(WeightsError, match="does not exist"):
        get_model("lenet5", weights=tmp_path / "nope.pt")


def test_safetensors_header_lying_about_its_size(tmp_path):
    path = tmp_path / "liar.safetensors"
    path.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        get_model("lenet5", weights=path)


# ---------------------------------------------------------------- property-based


_dtypes = st.sampled_from([np.uint8, np.int16, np.int64, np.float16, np.float32, np.float64,
                           np.bool_, np.complex64])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.lists(st.integers(0, 6), min_size=0, max_size=5), dtype=_dtypes,
       fill=st.sampled_from([0, 1, 255, 256, -1, 0.5, float("nan"), float("inf")]))
def test_random_arrays_work_or_raise_value_error(shape, dtype, fill):
    with np.errstate(all="ignore"):
        arr = np.full(shape, fill).astype(dtype) if shape else np.asarray(fill).astype(dtype)
    try:
        src = as_image_source(arr)
    except ValueError:
        return
    pre = ImagePreprocess(size=4, channels=3, mean=(0.0,) * 3, std=(1.0,) * 3)
    batches = list(src.iter_batches(batch_size=4, preprocess=pre))
    assert sum(len(b.indices) for b in batches) == len(src)
    assert all(torch.isfinite(b.images).all() for b in batches)


def test_write_image_helper_makes_real_files(tmp_path):
    path = write_image(tmp_path / "x.png", np.zeros((3, 3), dtype=np.uint8))
    assert decode_image(path).shape == (3, 3, 1)
