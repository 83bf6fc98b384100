import pytest
import torch


@pytest.fixture(autouse=True)
def _grad_mode():
    """Scripts run in-process (bundle_model, remeasure_model) switch gradients off globally."""
    enabled = torch.is_grad_enabled()
    yield
    torch.set_grad_enabled(enabled)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_runtest_setup(item):
    if "gpu" in item.keywords and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


AUDIO_NET = dict(channels=4, strides=[2, 4, 5, 8], latent_dim=8)
IMAGE_NET = dict(channels=8, channel_mult=[1, 2], num_res_blocks=1, factor=4, latent_dim=8, attention=False)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    """Two small (untrained) named models saved as folders, with entropy tables: audio and image."""
    from codec.model import Codec

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    audio = Codec.build("audio-seanet", "rvq", network_kwargs=AUDIO_NET,
                        quantizer_kwargs=dict(codebook_size=64, num_levels=4)).eval()
    t = torch.arange(24000) / 24000
    audio.fit_entropy_tables([torch.sin(2 * torch.pi * f * t).reshape(1, 1, -1) * 0.5 for f in (110, 440)])
    audio.save(root / "audio", name="audio-test")
    image = Codec.build("image-resnet", "rvq", network_kwargs=IMAGE_NET,
                        quantizer_kwargs=dict(codebook_size=32, num_levels=2)).eval()
    image.save(root / "image", name="image-test")
    return {"audio": root / "audio", "image": root / "image", "root": root}


@pytest.fixture
def media(tmp_path):
    """Real media files in a folder: stereo 44.1 kHz WAV, 8 kHz mono FLAC, RGB PNG, grey JPEG, 16-bit PNG."""
    import numpy as np
    import soundfile as sf
    from PIL import Image

    d = tmp_path / "media"
    (d / "sub").mkdir(parents=True)
    t = np.arange(44100 * 2) / 44100
    sf.write(d / "tone.wav", np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 330 * t)], 1) * 0.5, 44100, subtype="PCM_16")
    sf.write(d / "sub" / "phone.flac", np.sin(2 * np.pi * 300 * np.arange(8000) / 8000) * 0.3, 8000)
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((37, 53, 3)) * 255).astype(np.uint8)).save(d / "photo.png")
    Image.fromarray((rng.random((30, 21)) * 255).astype(np.uint8)).save(d / "sub" / "grey.jpg")
    Image.fromarray((rng.random((9, 11)) * 65535).astype(np.uint16)).save(d / "deep.png")
    return d
