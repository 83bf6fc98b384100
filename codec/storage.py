"""Safetensors files written byte for byte the same for the same content.

``safetensors.torch.save_file`` writes a file's metadata entries in an order that changes from
one process to the next (a hash map's), so the same tensors and metadata give different bytes
whenever there are two or more entries. Model folders are compared by file hash (the index's
``entropy_sha256``, ``scripts/share_files.py``), so :func:`write_safetensors` puts the entries in
sorted order: a model republished with its source's entropy tables writes its source's file.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Mapping

from torch import Tensor

__all__ = ["write_safetensors"]


def write_safetensors(tensors: Mapping[str, Tensor], path: str | Path, metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` (contiguous, on the CPU) and ``metadata`` to ``path`` as safetensors, the
    metadata entries in sorted order (the file's header is otherwise the library's own)."""
    from safetensors.torch import save

    data = save(dict(tensors), metadata=dict(metadata) if metadata else None)
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > size:  # the same entries reordered: never longer than the library's header
        raise AssertionError("safetensors header grew when its metadata was sorted")
    Path(path).write_bytes(data[:8] + text.ljust(size, b" ") + data[8 + size :])
