"""vqcodec: neural audio and image codecs built on vector quantization.

The quantizer core lives in :mod:`codec.quant` and sees only tokens ``(B, N, D)``. The library
API mirrors the ``vqcodec`` command::

    import codec
    model = codec.load_model("image-v1")            # or a model folder
    data = model.compress(x, rate="0.1bpp")          # x (1, 3, H, W) in [0, 1] -> .vqc bytes
    signal, info = codec.decompress(data)            # the model is found from the header
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "Codec",
    "load_model",
    "list_models",
    "compress_signal",
    "compress_file",
    "decompress",
    "decompress_file",
    "tokenize_file",
    "detokenize",
]

_LAZY = {
    "Codec": "codec.model",
    "load_model": "codec.hub",
    "list_models": "codec.hub",
    "compress_signal": "codec.files",
    "compress_file": "codec.files",
    "decompress": "codec.files",
    "decompress_file": "codec.files",
    "tokenize_file": "codec.files",
    "detokenize": "codec.files",
}


def __getattr__(name: str) -> Any:  # import torch-heavy modules only when used
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'codec' has no attribute {name!r}")
