"""Readers: what a user sees for good, missing, truncated, random and malicious files."""

import os

import pytest
import torch

from egaku.errors import ModelLoadError, ModelNotFoundError, UnsafeCheckpointError
from egaku.models import load_model
from egaku.models.export import export_single_file, ldm_state_dict
from egaku.models.formats import ModelFormat, detect_format, read_checkpoint
from egaku.models.tiny import tiny_bundle


@pytest.fixture(scope="module")
def sd1():
    return tiny_bundle("sd1")


def _unet_out(unet):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, unet.config.in_channels, 8, 8, generator=g)  # (B, C, H, W)
    ctx = torch.randn(1, 77, unet.config.cross_attention_dim, generator=g)  # (B, T, D)
    return unet(x, 10, encoder_hidden_states=ctx).sample


def test_ckpt_with_plain_state_dict_loads(sd1, tmp_path):
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": ldm_state_dict(sd1), "global_step": 7}, path)
    bundle = load_model(path)
    assert bundle.family == "sd1" and bundle.prediction_type == "epsilon" and not bundle.is_inpaint
    assert bundle.extra["prediction_source"] == "family default"
    ref, got = sd1.unet.state_dict(), bundle.unet.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    assert torch.equal(_unet_out(bundle.unet), _unet_out(sd1.unet))
    assert bundle.name == "plain" and bundle.sha256 == __import__("hashlib").sha256(path.read_bytes()).hexdigest()


def test_pickle_that_runs_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned-marker"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "payload": Evil()}, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_model(path)
    assert str(err.value) == (
        f"{path} needs arbitrary code to unpickle; refusing (convert it to .safetensors with a tool you trust)"
    )
    assert not marker.exists()


def test_missing_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")


def test_truncated_safetensors(sd1, tmp_path):
    good = export_single_file(sd1, tmp_path / "good.safetensors")
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError) as err:
        load_model(cut)
    assert str(err.value).startswith(f"{cut} is truncated or not a safetensors file")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_random_bytes(tmp_path, suffix):
    path = tmp_path / f"noise{suffix}"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(ModelLoadError) as err:
        load_model(path)
    assert not isinstance(err.value, UnsafeCheckpointError)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_truncated_ckpt(sd1, tmp_path):
    path = tmp_path / "half.ckpt"
    torch.save(ldm_state_dict(sd1), path)
    path.write_bytes(path.read_bytes()[:50_000])
    with pytest.raises(ModelLoadError, match="truncated or not a PyTorch checkpoint"):
        read_checkpoint(path)


def test_not_a_stable_diffusion_checkpoint(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.alpha": torch.ones(())}, path)
    with pytest.raises(ModelLoadError, match="not a Stable Diffusion checkpoint"):
        load_model(path)


def test_format_detection(tmp_path):
    (tmp_path / "m.safetensors").write_bytes(b"x")
    (tmp_path / "m.pt").write_bytes(b"x")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "model_index.json").write_text("{}")
    assert detect_format(tmp_path / "m.safetensors") is ModelFormat.SAFETENSORS
    assert detect_format(tmp_path / "m.pt") is ModelFormat.CHECKPOINT
    assert detect_format(tmp_path / "folder") is ModelFormat.DIFFUSERS
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="unsupported file type .onnx"):
        detect_format(tmp_path / "m.onnx")


def test_builtin_without_weights_says_how_to_train():
    from egaku.models.hashing import weight_files
    from egaku.models.loader import builtin_path

    if weight_files(builtin_path() / "unet"):
        pytest.skip("the built-in model has weights in this checkout")
    with pytest.raises(ModelLoadError, match=r"the built-in model has no weights yet; run `egaku train base`"):
        load_model()
