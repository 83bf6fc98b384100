"""Modality networks around the quantizer core.

Names carry the modality (``image-resnet``, ``audio-seanet``); each entry builds a matched
:class:`NetworkPair`::

    from codec.nets import get_network
    nets = get_network("image-resnet", latent_dim=64, factor=8)
    latent = nets.encoder(x)            # (B, 64, H/8, W/8)

Adding a modality (video, 3D) touches this package only.
"""

from __future__ import annotations

from typing import Any, Callable

from codec.nets.base import Decoder, Encoder, NetworkPair, PadInfo
from codec.registry import Registry

__all__ = ["Encoder", "Decoder", "NetworkPair", "PadInfo", "get_network", "list_networks", "register_network"]

_REGISTRY: Registry[NetworkPair] = Registry("network")


def register_network(name: str) -> Callable[[Callable[..., NetworkPair]], Callable[..., NetworkPair]]:
    """Register a function building a :class:`NetworkPair` from keyword arguments."""
    return _REGISTRY.register(name)


def get_network(name: str, **kwargs: Any) -> NetworkPair:
    """Build the encoder/decoder pair registered as ``name`` (see :func:`list_networks`)."""
    return _REGISTRY.get(name, **kwargs)


def list_networks() -> list[str]:
    """Registered network names, sorted."""
    return _REGISTRY.names()


def _register_builtins() -> None:
    from codec.nets import audio, image

    register_network("image-resnet")(image.build_image_resnet)
    register_network("image-gdn")(image.build_image_gdn)
    register_network("audio-seanet")(audio.build_audio_seanet)


_register_builtins()
