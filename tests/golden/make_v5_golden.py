"""Writes the container-version-5 golden files (run once; never to "fix" a test).

Version 5 changed the header only: the codec leaves out what the model named in the header
implies (modality, the audio sample rate, an audio shape that follows from the source record,
the rate point's name, written as its index among the model's sorted point names). The record
and the payload chunks are version 4's. So

``container_v5.vqc``: the container test's version-4 header and chunks in a version-5 file;
``codec_v5.vqc``, ``envelope_v5.vqc``: ``codec_v4.vqc``'s and ``envelope_v4.vqc``'s header and
chunks as the codec writes them in version 5 (with ``tiny_audio_model``).

They decode to the codes and steps pinned by ``codec_v2_codes.npy`` and ``envelope_v2_steps.npy``.
"""

from pathlib import Path

import codec
from codec.bitstream import read_container, write_container
from codec.model import compact_header, complete_header
from make_v4_golden import CONTAINER_CHUNKS, CONTAINER_HEADER  # the same container content, framed as version 5

HERE = Path(__file__).parent


def main() -> None:
    (HERE / "container_v5.vqc").write_bytes(write_container(CONTAINER_HEADER, CONTAINER_CHUNKS, version=5))
    model = codec.load_model(HERE / "tiny_audio_model")
    for name in ("codec", "envelope"):
        header, chunks = read_container((HERE / f"{name}_v4.vqc").read_bytes())
        (HERE / f"{name}_v5.vqc").write_bytes(write_container(compact_header(complete_header(header), model), chunks, version=5))


if __name__ == "__main__":
    main()
