"""poolarch: learn where and how much a CNN downsamples."""
__version__ = "0.1.0"
