"""FiffDepth: feed-forward transformation of diffusion-based generators for detailed depth estimation."""

from .numerics import strict_mkl

__version__ = "0.1.0"

# Same bytes at any thread count on CPU: MKL's strict reproducible mode must be set before its
# first computation, so it is set here (fiffdepth/numerics.py says why, and how to opt out).
strict_mkl()
