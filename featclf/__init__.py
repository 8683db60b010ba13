"""featclf: classify images with deep features."""
__version__ = "0.1.0"
