"""Writes the container-version-3 golden files of the codec (run once; never to "fix" a test).

Version 3 changed the container only (a binary header record, one CRC-32 for the whole file, a
16-digit weights hash): the payload chunks are the version-2 golden files' own. So

``codec_v3.vqc``: ``codec_v2.vqc``'s header and chunks in a version-3 container;
``envelope_v3.vqc``: ``envelope_v2.vqc``'s, likewise (band-energy chunks after each tile's codes).

They decode to the codes and steps pinned by ``codec_v2_codes.npy`` and ``envelope_v2_steps.npy``.
"""

from pathlib import Path

from codec.bitstream import read_container, write_container
HERE = Path(__file__).parent


def main() -> None:
    for name in ("codec", "envelope"):
        header, chunks = read_container((HERE / f"{name}_v2.vqc").read_bytes())
        header["model"]["sha256"] = header["model"]["sha256"][:16]  # version 3 wrote 16 hex digits
        (HERE / f"{name}_v3.vqc").write_bytes(write_container(header, chunks, version=3))


if __name__ == "__main__":
    main()
