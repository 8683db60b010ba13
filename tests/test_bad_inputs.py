"""Bad inputs, built for real: each gives a clear error naming the culprit, or is converted right.

Covers image files (decode), arrays and tensors (validation before any model work), and
weights/checkpoints (safe loading). The number of cases is printed at the end of the run.
"""

from __future__ import annotations

import io
import math
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
    # Stored 20 wide x 10 high: left half red, right half blue, a green block top-left. EXIF
    # orientation 6 means "rotate 90 degrees clockwise to display": the left edge becomes the
    # top and the top-left corner the top-right (a transpose or a counter-clockwise turn would
    # put red at the bottom or green on the left).
    stored = np.zeros((10, 20, 3), np.uint8)
    stored[:, :10] = (255, 0, 0)
    stored[:, 10:] = (0, 0, 255)
    stored[:4, :4] = (0, 255, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "rotated.jpg").write_bytes(_jpeg_bytes(Image.fromarray(stored),
                                                       exif=exif.tobytes()))
    upright = decode_image(tmp_path / "rotated.jpg").astype(int)
    assert upright.shape == (20, 10, 3)

    def colour(row, col):
        return "rgb"[int(np.argmax(upright[row, col]))]

    assert [colour(1, 8), colour(1, 4), colour(6, 2), colour(15, 5), colour(18, 1)] == \
        ["g", "r", "r", "b", "b"]


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
    (np.full((2, 8, 8), 300, dtype=np.int32), "0-255"),
    (np.zeros((16, 16), dtype=np.float32), r"one 16x16 grey image, or 16 flattened 4x4"),
    (np.zeros((2, 8, 8), dtype=bool), "dtype bool"),
    (torch.full((2, 1, 8, 8), float("nan")), "NaN or infinity"),
    (["a.png", 3], "mixes file paths"),
    ({"not": "images"}, "not an image input"),
    (np.full((2, 8, 8), 255.0), r"float values in \[255, 255\].*divide 0-255 values by 255"),
    (np.zeros((8, 8, 4), dtype=np.uint8), r"4 channels \(RGBA\?\).*drop the alpha channel"),
    (np.zeros((2, 8, 8), dtype=np.uint8), None),
], ids=["nan", "inf", "rank1", "rank5", "five-channels", "empty", "int-300", "ambiguous-2d",
        "bool", "tensor-nan", "mixed-list", "dict", "float-0-255", "rgba", "control"])
def test_bad_arrays_raise_value_error_before_model_work(bad, needle):
    if needle is None:  # the control case: the same kind of call succeeds
        assert len(as_image_source(bad)) == 2
        return
    with pytest.raises(ValueError, match=needle):
        as_image_source(bad)


def test_object_arrays_of_non_numbers_raise_type_error():
    mixed = np.zeros((2, 8, 8)).astype(object)
    mixed[1, 2, 3] = {"not": "a number"}
    with pytest.raises(TypeError, match="X is an object array that is not numbers .*dict"):
        as_image_source(mixed)
    numbers = np.arange(2 * 28 * 28).reshape(2, 28, 28).astype(object) % 256
    assert as_image_source(numbers).images.dtype == torch.uint8


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


_dtypes = st.sampled_from([np.uint8, np.uint16, np.int16, np.int64, np.float16, np.float32,
                           np.float64, np.bool_, np.complex64])


def expected_images(shape: list[int], dtype, value) -> tuple[int, int] | None:
    """The input rule, written independently of featclf: ``(number of images, pixel value)``
    that an array of ``shape`` filled with ``value`` (already cast to ``dtype``) must give, or
    None when it must be refused.

    * dtype: bool and complex refused; floats must be finite and in [0, 1] (pixel
      round(255 v)); uint16 is 16-bit (pixel round(v * 255 / 65535)); other integers 0-255.
    * shape: 2, 3 or 4 dimensions, none of size 0. 2-D (a, b): b = s*s with s >= 2 is rows of
      flattened s x s images (a images), except a == b, which is ambiguous and refused; any
      other 2-D array is one image when neither side exceeds 4 times the other, else refused.
      3-D (a, b, c): one image (H, W, C) when c is 1, 3 or 4, else a grey images. 4-D
      (n, p, q, r): the channel axis is p or r, whichever is 1, 3 or 4 (r when both);
      neither: refused. 4 channels (RGBA) are refused.
    """
    kind = np.dtype(dtype).kind
    if kind in "bc" or len(shape) not in (2, 3, 4) or 0 in shape:
        return None
    if len(shape) == 2:
        a, b = shape
        side = math.isqrt(b)
        rows = side >= 2 and side * side == b
        if rows and a == b:
            return None
        if not rows and max(a, b) > 4 * min(a, b):
            return None
        n, channels = (a if rows else 1), 1
    elif len(shape) == 3:
        n, channels = (1, shape[2]) if shape[2] in (1, 3, 4) else (shape[0], 1)
    else:
        first, last = shape[1] in (1, 3, 4), shape[3] in (1, 3, 4)
        if not (first or last):
            return None
        n, channels = shape[0], shape[3] if last else shape[1]
    if channels == 4:
        return None
    if kind == "f":
        if not math.isfinite(value) or not 0 <= value <= 1:
            return None
        return n, round(255 * value)
    if np.dtype(dtype) == np.uint16:
        return n, int(np.round(value * 255 / 65535))
    return (n, int(value)) if 0 <= value <= 255 else None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.one_of(st.lists(st.integers(1, 6), min_size=2, max_size=4),  # mostly images
                      st.lists(st.integers(0, 6), min_size=0, max_size=5)), dtype=_dtypes,
       fill=st.sampled_from([0, 1, 255, 256, -1, 0.5, float("nan"), float("inf")]))
def test_random_arrays_are_accepted_or_refused_as_the_rule_says(shape, dtype, fill):
    with np.errstate(all="ignore"):
        arr = np.full(shape, fill).astype(dtype) if shape else np.asarray(fill).astype(dtype)
    value = arr.reshape(-1)[0].item() if arr.size else 0
    expected = expected_images(shape, dtype, value)
    if expected is None:
        with pytest.raises(ValueError):
            as_image_source(arr)
        return
    src = as_image_source(arr)
    n, pixel = expected
    assert len(src) == n
    pre = ImagePreprocess(size=4, channels=3, mean=(0.0,) * 3, std=(1.0,) * 3)
    batches = list(src.iter_batches(batch_size=4, preprocess=pre))
    assert sum(len(b.indices) for b in batches) == n
    images = torch.cat([b.images for b in batches])
    assert images.shape == (n, 3, 4, 4)
    torch.testing.assert_close(images, torch.full_like(images, pixel / 255), atol=1e-6, rtol=0)


def test_write_image_helper_makes_real_files(tmp_path):
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    path = write_image(tmp_path / "x.png", pixels)
    np.testing.assert_array_equal(decode_image(path), pixels[:, :, None])
