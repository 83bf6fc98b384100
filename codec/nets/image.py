"""2D convolutional ResNet encoder/decoder for images (VQGAN / RAQ-VAE style).

Papers: Esser, Rombach, Ommer 2021, "Taming Transformers for High-Resolution Image Synthesis"
(arXiv 2012.09841) for the architecture (residual blocks with GroupNorm + SiLU, strided
downsampling, nearest-neighbour upsampling, self-attention at the lowest resolution);
Seo & Kang 2024 (RAQ, arXiv 2405.14222) use the same family.

Input convention: images ``(B, C, H, W)`` float in ``[0, 1]``, ``C`` = the model's
``in_channels`` (3 for RGB models, 1 for greyscale models). The encoder maps them to
``[-1, 1]``, pads ``H, W`` to a multiple of ``factor`` (reflect where the image is large
enough, replicate otherwise, on the bottom/right), and the decoder output is cropped back and
mapped to ``[0, 1]``. Any ``H, W >= 1`` works.

File-level policy (applied by ``codec.io`` before images reach the network): greyscale files
going into an RGB model are replicated to three channels and decoded back to one (ITU-R BT.601
luma); EXIF orientation is applied on load; 16-bit files are scaled to ``[0, 1]`` (the codec
itself works at 8-bit precision); an alpha channel is not coded — RGBA input is refused unless
the caller chooses to drop or flatten it.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codec.nets.base import Decoder, Encoder, NetworkPair, PadInfo

__all__ = ["ImageEncoder", "ImageDecoder", "build_image_resnet", "GDN", "ZeroResBlock2d", "GDNImageEncoder", "GDNImageDecoder", "build_image_gdn"]


def _norm(c: int) -> nn.GroupNorm:
    # 32 groups as in VQGAN, but at least 2 channels per group so a 1x1 latent still normalises
    groups = math.gcd(32, c)
    while groups > 1 and c // groups < 2:
        groups //= 2
    return nn.GroupNorm(groups, c, eps=1e-6)


class ResBlock2d(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1),
            _norm(c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1),
        )
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class AttnBlock2d(nn.Module):
    """Single-head self-attention over the ``H*W`` positions (used at the lowest resolution)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = _norm(c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


def _widths(channels: int, channel_mult: Sequence[int], levels: int) -> list[int]:
    mult = list(channel_mult) + [channel_mult[-1]] * max(0, levels + 1 - len(channel_mult))
    return [channels * m for m in mult[: levels + 1]]


def _mid(c: int, attention: bool) -> nn.Sequential:
    return nn.Sequential(ResBlock2d(c, c), AttnBlock2d(c) if attention else nn.Identity(), ResBlock2d(c, c))


class _ImageSide(Encoder):
    """The pixel side every image encoder shares: ``[0, 1]`` -> ``[-1, 1]``, padding to a multiple
    of ``stride`` (reflect where the image is large enough, replicate otherwise, bottom/right)
    and cropping the decoder output back."""

    modality = "image"
    in_channels: int

    def prepare(self, x: Tensor) -> tuple[Tensor, PadInfo]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-1] < 1 or x.shape[-2] < 1:
            raise ValueError(f"empty image {tuple(x.shape)}")
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        y = x.float() * 2.0 - 1.0
        if ph or pw:
            # reflect needs pad < size on each axis; replicate covers tiny images
            mode = "reflect" if ph < h and pw < w else "replicate"
            y = F.pad(y, (0, pw, 0, ph), mode=mode)
        return y, PadInfo(shape=tuple(x.shape), padded=(h + ph, w + pw))

    def restore(self, x: Tensor, info: PadInfo) -> Tensor:
        h, w = info.shape[-2:]
        return ((x[..., :h, :w] + 1.0) / 2.0).clamp(0.0, 1.0)

    def tokens_per_unit(self) -> float:
        return 1.0 / (self.stride * self.stride)


class ImageEncoder(_ImageSide):
    """``(B, C, H, W)`` in ``[0, 1]`` -> latent ``(B, latent_dim, ceil(H/f), ceil(W/f))``.

    Args:
        in_channels: 3 (RGB) or 1 (greyscale).
        channels: width of the first stage.
        channel_mult: width multipliers per stage (stage ``i`` has ``channels * mult[i]``).
        num_res_blocks: residual blocks per stage.
        factor: total downsampling ``f`` (a power of two: 4, 8, 16).
        latent_dim: channels of the latent map (the quantizer's token dimension).
        attention: self-attention at the lowest resolution.
    """

    def __init__(
        self,
        in_channels: int = 3,
        channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2, 4),
        num_res_blocks: int = 2,
        factor: int = 8,
        latent_dim: int = 64,
        attention: bool = True,
    ) -> None:
        super().__init__()
        if factor < 1 or factor & (factor - 1):
            raise ValueError(f"factor must be a power of two, got {factor}")
        levels = int(math.log2(factor))
        widths = _widths(channels, channel_mult, levels)
        self.in_channels = in_channels
        self.latent_dim = latent_dim
        self.stride = factor
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1)]
        for i in range(levels):
            layers += [ResBlock2d(widths[i], widths[i]) for _ in range(num_res_blocks)]
            layers.append(nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1))
        layers += [ResBlock2d(widths[-1], widths[-1]) for _ in range(num_res_blocks)]
        layers += [_mid(widths[-1], attention), _norm(widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], latent_dim, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ImageDecoder(Decoder):
    """Latent ``(B, latent_dim, h, w)`` -> ``(B, C, h*f, w*f)`` in ``[-1, 1]`` (mirror of the encoder)."""

    def __init__(
        self,
        out_channels: int = 3,
        channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2, 4),
        num_res_blocks: int = 2,
        factor: int = 8,
        latent_dim: int = 64,
        attention: bool = True,
    ) -> None:
        super().__init__()
        levels = int(math.log2(factor))
        widths = _widths(channels, channel_mult, levels)
        layers: list[nn.Module] = [nn.Conv2d(latent_dim, widths[-1], 3, padding=1), _mid(widths[-1], attention)]
        for i in reversed(range(levels)):
            layers += [ResBlock2d(widths[i + 1], widths[i + 1]) for _ in range(num_res_blocks)]
            layers += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(widths[i + 1], widths[i], 3, padding=1)]
        layers += [ResBlock2d(widths[0], widths[0]) for _ in range(num_res_blocks)]
        layers += [_norm(widths[0]), nn.SiLU(), nn.Conv2d(widths[0], out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


def build_image_resnet(
    in_channels: int = 3,
    channels: int = 64,
    channel_mult: Sequence[int] = (1, 2, 2, 4),
    num_res_blocks: int = 2,
    factor: int = 8,
    latent_dim: int = 64,
    attention: bool = True,
) -> NetworkPair:
    """The ``image-resnet`` pair. Defaults: factor 8, 64 latent channels (see :class:`ImageEncoder`)."""
    kw = dict(
        channels=channels, channel_mult=tuple(channel_mult), num_res_blocks=num_res_blocks,
        factor=factor, latent_dim=latent_dim, attention=attention,
    )
    return NetworkPair(
        encoder=ImageEncoder(in_channels=in_channels, **kw),
        decoder=ImageDecoder(out_channels=in_channels, **kw),
        config={"in_channels": in_channels, **kw, "channel_mult": list(channel_mult)},
    )


# -- GDN transform (Balle et al.) ---------------------------------------------------------------------
class GDN(nn.Module):
    """Generalized divisive normalization, ``y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)``
    (``inverse``: multiplied instead, IGDN), over the channels of ``(B, C, H, W)``.

    Paper: Balle, Laparra, Simoncelli 2016, "Density Modeling of Images using a Generalized
    Normalization Transformation" (arXiv 1511.06281), the nonlinearity of their end-to-end
    optimized codecs (arXiv 1611.01704, 1802.01436). ``beta`` and ``gamma`` are kept
    non-negative as absolute values of the parameters, ``beta`` bounded below by ``1e-6`` so the
    denominator never vanishes; initialised to ``beta = 1``, ``gamma = 0.1 I``.
    """

    def __init__(self, channels: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(0.1 * torch.eye(channels))

    def forward(self, x: Tensor) -> Tensor:
        gamma = self.gamma.abs()[:, :, None, None]
        norm = torch.sqrt(F.conv2d(x * x, gamma, self.beta.abs() + 1e-6))
        return x * norm if self.inverse else x / norm


def _check_factor(factor: int) -> int:
    if factor < 2 or factor & (factor - 1):
        raise ValueError(f"factor must be a power of two >= 2, got {factor}")
    return int(math.log2(factor))


class GDNImageEncoder(_ImageSide):
    """``(B, C, H, W)`` in ``[0, 1]`` -> latent ``(B, latent_dim, ceil(H/f), ceil(W/f))`` through
    ``log2(f)`` stride-2 5x5 convolutions, each followed by GDN, then a 3x3 convolution to the
    latent: the analysis transform of Balle et al. 2017/2018 with a vector-quantized latent.

    Far cheaper per pixel than :class:`ImageEncoder` (no full-resolution layer besides the first
    strided one, no normalisation statistics) and quicker to train for squared error.

    Args:
        in_channels: 3 (RGB) or 1 (greyscale).
        channels: width ``N`` of every hidden layer.
        factor: total downsampling ``f`` (a power of two >= 2).
        latent_dim: channels of the latent map (the quantizer's token dimension).
    """

    def __init__(self, in_channels: int = 3, channels: int = 128, factor: int = 8, latent_dim: int = 32) -> None:
        super().__init__()
        levels = _check_factor(factor)
        self.in_channels = in_channels
        self.latent_dim = latent_dim
        self.stride = factor
        layers: list[nn.Module] = []
        for i in range(levels):
            layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, 5, stride=2, padding=2), GDN(channels)]
        layers.append(nn.Conv2d(channels, latent_dim, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ZeroResBlock2d(nn.Module):
    """``x + conv(relu(conv(x)))`` with 3x3 convolutions, the second initialised to zero.

    The residual block of Cheng et al. 2020 ("Learned Image Compression with Discretized Gaussian
    Mixture Likelihoods and Attention Modules", arXiv 2001.01568) between the synthesis
    transform's layers. Zero-initialised, a new block is the identity, so blocks added to a
    trained decoder leave its output unchanged until they are trained.
    """

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class GDNImageDecoder(Decoder):
    """Latent ``(B, latent_dim, h, w)`` -> ``(B, C, h*f, w*f)`` in ``[-1, 1]``: a 3x3 convolution and
    IGDN, then ``log2(f)`` stride-2 5x5 transposed convolutions (IGDN between them), the synthesis
    transform of Balle et al. (mirror of :class:`GDNImageEncoder`).

    ``res_blocks[i]`` residual blocks (:class:`ZeroResBlock2d`) follow stage ``i``'s IGDN (stage 0
    at the latent resolution, stage ``i`` after the ``i``-th upsampling; at most ``log2(f)``
    entries), and ``attention`` adds a self-attention block at the latent resolution after them,
    its output projection zero-initialised. Both start as the identity: a decoder grown from a
    trained one (same weights for the layers it shares) decodes exactly what that one does, and
    fine-tuning it (``train_parts="decoder"`` with ``network_overrides``) leaves the encoder,
    codes and file sizes unchanged. Their weights live in ``stages`` (``stages.<i>.<j>``), so the
    plain decoder's keys (``net.*``) are the same with and without them.
    """

    def __init__(self, out_channels: int = 3, channels: int = 128, factor: int = 8, latent_dim: int = 32,
                 res_blocks: Sequence[int] = (), attention: bool = False) -> None:
        super().__init__()
        levels = _check_factor(factor)
        res_blocks = [int(n) for n in res_blocks]
        if len(res_blocks) > levels or any(n < 0 for n in res_blocks):
            raise ValueError(f"res_blocks: at most {levels} counts >= 0 (one per stage before the output), got {res_blocks}")
        layers: list[nn.Module] = [nn.Conv2d(latent_dim, channels, 3, padding=1), GDN(channels, inverse=True)]
        for i in range(levels):
            last = i == levels - 1
            layers.append(nn.ConvTranspose2d(channels, out_channels if last else channels, 5, stride=2, padding=2,
                                             output_padding=1))
            if not last:
                layers.append(GDN(channels, inverse=True))
        self.net = nn.Sequential(*layers)
        counts = res_blocks + [0] * (levels - len(res_blocks))
        # an empty stage is the identity and holds no weights: a plain decoder's keys are net.* only
        self.stages = nn.ModuleList(nn.Sequential(*[ZeroResBlock2d(channels) for _ in range(n)]) for n in counts)
        if attention:
            attn = AttnBlock2d(channels)
            nn.init.zeros_(attn.proj.weight)
            nn.init.zeros_(attn.proj.bias)
            self.stages[0].append(attn)

    def forward(self, z: Tensor) -> Tensor:
        # net = [conv, IGDN, (deconv, IGDN) * (levels - 1), deconv]: stage i follows layer 2i + 1
        x = z
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i % 2 == 1:
                x = self.stages[i // 2](x)
        return x


def build_image_gdn(in_channels: int = 3, channels: int = 128, factor: int = 8, latent_dim: int = 32,
                    decoder_res_blocks: Sequence[int] = (), decoder_attention: bool = False) -> NetworkPair:
    """The ``image-gdn`` pair: GDN analysis/synthesis transforms (see :class:`GDNImageEncoder`).
    Defaults: 128 channels, factor 8, 32 latent channels (about 1.8 M parameters).

    ``decoder_res_blocks`` / ``decoder_attention``: a deeper synthesis transform (residual blocks
    per stage, self-attention at the latent resolution; see :class:`GDNImageDecoder`); the
    encoder is the same with and without them."""
    kw = dict(channels=channels, factor=factor, latent_dim=latent_dim)
    config: dict = {"in_channels": in_channels, **kw}
    if decoder_res_blocks:
        config["decoder_res_blocks"] = [int(n) for n in decoder_res_blocks]
    if decoder_attention:
        config["decoder_attention"] = True
    return NetworkPair(
        encoder=GDNImageEncoder(in_channels=in_channels, **kw),
        decoder=GDNImageDecoder(out_channels=in_channels, res_blocks=decoder_res_blocks, attention=decoder_attention, **kw),
        config=config,
    )
