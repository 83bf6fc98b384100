"""vqcodec: neural audio and image codecs built on vector quantization.

The quantizer core lives in :mod:`codec.quant` and sees only tokens ``(B, N, D)``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
