"""cheeger: dense semantic segmentation with differentiable spectral heads."""

__version__ = "0.1.0"
