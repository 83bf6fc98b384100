"""Contract tests over the network registry: odd sizes, channels, gradient flow."""

import pytest
import torch

from codec.nets import get_network, list_networks
from codec.nets.audio import resample
from codec.nets.discriminators import get_discriminator, list_discriminators
from codec.nets.image import GDN

SMALL = {
    "image-resnet": dict(channels=8, channel_mult=(1, 2), num_res_blocks=1, factor=4, latent_dim=8),
    "image-gdn": dict(channels=8, factor=4, latent_dim=8),
    "audio-seanet": dict(channels=4, strides=(2, 4, 5, 8), latent_dim=8),
}
# inputs of awkward sizes per modality: (shape, expected latent spatial)
ODD_INPUTS = {
    "image": [((2, 3, 97, 131), (25, 33)), ((1, 3, 1, 1), (1, 1)), ((1, 3, 5, 2), (2, 1))],
    "audio": [((2, 1, 12345), (39,)), ((1, 2, 1), (1,)), ((3, 2, 320), (1,))],
}


def test_every_network_has_a_small_test_config():
    assert set(list_networks()) == set(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_odd_sizes_round_trip_shapes_and_gradients(name):
    nets = get_network(name, **SMALL[name])
    enc, dec = nets.encoder, nets.decoder
    for shape, latent_spatial in ODD_INPUTS[enc.modality]:
        x = torch.rand(*shape) * (2 if enc.modality == "audio" else 1) - (1 if enc.modality == "audio" else 0)
        x.requires_grad_(True)
        y, info = enc.prepare(x)
        assert all(s % enc.stride == 0 for s in y.shape[2:])
        z = enc(y)
        assert z.shape[1] == enc.latent_dim and tuple(z.shape[2:]) == latent_spatial
        out = enc.restore(dec(z), info)
        assert out.shape == x.shape
        out.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        x.grad = None


@pytest.mark.parametrize("name", ["image-resnet", "image-gdn"])
def test_image_padding_reflects_when_possible_and_replicates_on_tiny_images(name):
    enc = get_network(name, **SMALL[name]).encoder
    x = torch.rand(1, 3, 6, 7)
    y, _ = enc.prepare(x)
    # reflect: padded row 6 mirrors row 4 (in the network's [-1, 1] range)
    torch.testing.assert_close(y[..., 6, :7], x[..., 4, :] * 2 - 1)
    tiny = torch.rand(1, 3, 1, 2)
    y, _ = enc.prepare(tiny)
    assert y.shape[-2:] == (4, 4)
    torch.testing.assert_close(y[..., 3, 0], tiny[..., 0, 0] * 2 - 1)  # replicated


@pytest.mark.parametrize("name", ["image-resnet", "image-gdn"])
def test_greyscale_model_and_wrong_channel_counts(name):
    nets = get_network(name, **{**SMALL[name], "in_channels": 1})
    y, info = nets.encoder.prepare(torch.rand(2, 1, 10, 9))
    assert nets.encoder.restore(nets.decoder(nets.encoder(y)), info).shape == (2, 1, 10, 9)
    with pytest.raises(ValueError, match=r"expected images \(B, 1, H, W\)"):
        nets.encoder.prepare(torch.rand(1, 3, 8, 8))


def test_gdn_is_the_divisive_normalisation_and_igdn_its_multiplicative_mirror():
    gdn, igdn = GDN(2), GDN(2, inverse=True)
    with torch.no_grad():
        for m in (gdn, igdn):
            m.beta.copy_(torch.tensor([0.5, -2.0]))  # used as |beta|
            m.gamma.copy_(torch.tensor([[0.2, 0.1], [-0.3, 0.4]]))  # used as |gamma|
    x = torch.randn(3, 2, 4, 5)
    norm = torch.sqrt(torch.stack([0.5 + 0.2 * x[:, 0] ** 2 + 0.1 * x[:, 1] ** 2,
                                   2.0 + 0.3 * x[:, 0] ** 2 + 0.4 * x[:, 1] ** 2], 1) + 1e-6)
    torch.testing.assert_close(gdn(x), x / norm)
    torch.testing.assert_close(igdn(x), x * norm)
    # the denominator stays positive with every parameter at zero
    with torch.no_grad():
        gdn.beta.zero_()
        gdn.gamma.zero_()
    assert torch.isfinite(gdn(x)).all()


def test_gdn_network_factor_and_size():
    with pytest.raises(ValueError, match="power of two"):
        get_network("image-gdn", factor=6)
    nets = get_network("image-gdn")  # the defaults: 128 channels, factor 8, 32-dim latent
    assert nets.encoder.stride == 8 and nets.encoder.latent_dim == 32
    assert nets.encoder.tokens_per_unit() == 1 / 64
    n_params = sum(p.numel() for m in (nets.encoder, nets.decoder) for p in m.parameters())
    assert 1.7e6 < n_params < 1.9e6


def test_stereo_is_coded_per_channel():
    nets = get_network("audio-seanet", **SMALL["audio-seanet"])
    enc, dec = nets.encoder, nets.decoder
    x = torch.rand(2, 2, 1000) * 2 - 1
    y, info = enc.prepare(x)
    assert y.shape == (4, 1, 1280)  # channels folded into the batch, padded to the hop
    # channel 1 of item 0 is coded exactly as that channel alone
    z_pair = enc(y)
    z_alone = enc(enc.prepare(x[:1, 1:2])[0])
    torch.testing.assert_close(z_pair[1:2], z_alone, rtol=1e-4, atol=1e-5)
    out = enc.restore(dec(z_pair), info)
    assert out.shape == x.shape
    assert enc.tokens_per_unit() == 24000 / 320


def test_resample_round_trip():
    t = torch.arange(8000) / 8000
    wav = torch.sin(2 * torch.pi * 440 * t)[None, None]
    up = resample(wav, 8000, 24000)
    assert up.shape[-1] == 24000
    back = resample(up, 24000, 8000)
    assert back.shape[-1] == 8000
    assert (back - wav)[..., 100:-100].abs().max() < 0.02
    assert resample(wav, 8000, 8000) is wav


@pytest.mark.parametrize("name", list_discriminators())
def test_discriminators_return_logits_and_features(name):
    d = get_discriminator(name, channels=8)
    x = torch.rand(2, 1, 4000) if name.startswith("audio") else torch.rand(2, 3, 64, 48)
    x.requires_grad_(True)
    logits, feats = d(x)
    assert len(logits) == len(feats) >= 1
    sum(l.mean() for l in logits).backward()
    assert x.grad.abs().sum() > 0


def test_gdn_decoder_grows_by_blocks_that_start_as_the_identity():
    plain = get_network("image-gdn", **SMALL["image-gdn"]).decoder
    grown_pair = get_network("image-gdn", **SMALL["image-gdn"], decoder_res_blocks=[2, 1], decoder_attention=True)
    grown = grown_pair.decoder
    assert grown_pair.config["decoder_res_blocks"] == [2, 1] and grown_pair.config["decoder_attention"] is True
    assert "decoder_res_blocks" not in get_network("image-gdn", **SMALL["image-gdn"]).config  # plain configs unchanged
    # the plain decoder's keys are all there, unchanged in name and shape; the new ones sit in "stages"
    plain_keys = plain.state_dict()
    assert all(grown.state_dict()[k].shape == v.shape for k, v in plain_keys.items())
    assert {k.split(".")[0] for k in grown.state_dict()} == {"net", "stages"}
    missing, unexpected = grown.load_state_dict(plain_keys, strict=False)
    assert not unexpected and all(k.startswith("stages.") for k in missing)
    z = torch.randn(2, 8, 5, 3)
    torch.testing.assert_close(grown(z), plain(z))
    # once trained, the blocks act: stage 0 at the latent resolution, stage 1 after the first upsampling
    seen = []
    for i, stage in enumerate(grown.stages):
        stage.register_forward_hook(lambda m, inp, out, i=i: seen.append((i, tuple(out.shape[-2:]))))
    with torch.no_grad():
        grown.stages[0][0].conv2.weight.normal_()
    assert not torch.allclose(grown(z), plain(z))
    assert seen[-2:] == [(0, (5, 3)), (1, (10, 6))]
    with pytest.raises(ValueError, match="res_blocks"):
        get_network("image-gdn", **SMALL["image-gdn"], decoder_res_blocks=[1, 1, 1])  # factor 4: two stages
    with pytest.raises(ValueError, match="res_blocks"):
        get_network("image-gdn", **SMALL["image-gdn"], decoder_res_blocks=[-1])
