"""Images in: built-in data sets, image files and folders, decoding, preprocessing, batching."""

from featclf.data.datasets import load_digits_images, load_mnist5k
from featclf.data.decode import ImageDecodeError, decode_image
from featclf.data.files import ImageFiles, image_files
from featclf.data.inputs import as_image_source
from featclf.data.transforms import ImagePreprocess, seed_augmentation

__all__ = [
    "ImageDecodeError",
    "ImageFiles",
    "ImagePreprocess",
    "as_image_source",
    "decode_image",
    "image_files",
    "load_digits_images",
    "load_mnist5k",
    "seed_augmentation",
]
