"""FiffDepth: feed-forward transformation of diffusion-based generators for detailed depth estimation."""

__version__ = "0.1.0"
