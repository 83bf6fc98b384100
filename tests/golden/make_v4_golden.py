"""Writes the container-version-4 golden files (run once; never to "fix" a test).

Version 4 changed the header only (one more record symbol, ``"band-energy-context"``; the codec
leaves out ``coding`` when it is ``"range"`` and ``tiles`` when the signal is one tile; an 8-digit
weights hash): the payload chunks are the version-2 golden files' own. So

``container_v4.vqc``: the container test's header with the new symbol, and its chunks;
``codec_v4.vqc``, ``envelope_v4.vqc``: ``codec_v3.vqc``'s and ``envelope_v3.vqc``'s header and
chunks as the codec writes them in version 4.

They decode to the codes and steps pinned by ``codec_v2_codes.npy`` and ``envelope_v2_steps.npy``.
"""

from pathlib import Path

from codec.bitstream import read_container, write_container
from codec.model import compact_header

HERE = Path(__file__).parent
CONTAINER_HEADER = {"envelope": "band-energy-context", "modality": "audio", "rate": "n2", "shape": [1, 2, 100]}
CONTAINER_CHUNKS = [b"hello", b"", bytes(range(10))]


def main() -> None:
    (HERE / "container_v4.vqc").write_bytes(write_container(CONTAINER_HEADER, CONTAINER_CHUNKS, version=4))
    for name in ("codec", "envelope"):
        header, chunks = read_container((HERE / f"{name}_v3.vqc").read_bytes())
        header["model"]["sha256"] = header["model"]["sha256"][:8]
        (HERE / f"{name}_v4.vqc").write_bytes(write_container(compact_header(header), chunks, version=4))


if __name__ == "__main__":
    main()
