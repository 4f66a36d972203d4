"""Device and dtype resolution, memory savers, CPU offload (on CPU only for not breaking)."""

import pytest
import torch

from egaku.engine.devices import Toggle, apply_memory_savers, enable_cpu_offload, module_device, resolve_device, resolve_dtype
from egaku.errors import InvalidRequestError
from egaku.models.tiny import tiny_bundle


def test_auto_device_and_dtype():
    device = resolve_device("auto")
    if torch.cuda.is_available():
        assert device.type == "cuda"
    elif not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        assert device == torch.device("cpu")
        assert resolve_dtype("auto", device) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("auto", torch.device("mps")) == torch.float16


@pytest.mark.parametrize("name, dtype", [("fp32", torch.float32), ("FP16", torch.float16), ("bf16", torch.bfloat16),
                                         ("float16", torch.float16), (torch.bfloat16, torch.bfloat16)])
def test_explicit_dtypes(name, dtype):
    assert resolve_dtype(name, torch.device("cpu")) == dtype


def test_unknown_dtype_and_device():
    with pytest.raises(InvalidRequestError, match="unknown dtype 'fp8'; use auto, fp32, fp16 or bf16"):
        resolve_dtype("fp8", torch.device("cpu"))
    with pytest.raises(InvalidRequestError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(InvalidRequestError, match="unsupported device 'meta'"):
        resolve_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(InvalidRequestError, match="no CUDA GPU is available"):
        resolve_device("cuda")


def test_toggle_parse():
    assert Toggle.parse(True, "x") is Toggle.ON and Toggle.parse("AUTO", "x") is Toggle.AUTO
    with pytest.raises(InvalidRequestError, match="VAE tiling must be one of auto, on, off; got 'maybe'"):
        Toggle.parse("maybe", "VAE tiling")


def test_memory_savers_follow_image_size():
    bundle = tiny_bundle()
    small = apply_memory_savers(bundle, width=64, height=64, batch_size=1,
                                attention_slicing=Toggle.AUTO, vae_tiling=Toggle.AUTO)
    assert small == {"attention_slicing": False, "vae_tiling": False}
    big = apply_memory_savers(bundle, width=2048, height=2048, batch_size=1,
                              attention_slicing=Toggle.AUTO, vae_tiling=Toggle.AUTO)
    assert big == {"attention_slicing": True, "vae_tiling": True}
    assert bundle.vae.use_tiling is True
    processors = {type(p).__name__ for p in bundle.unet.attn_processors.values()}
    assert processors == {"SlicedAttnProcessor"}
    apply_memory_savers(bundle, width=64, height=64, batch_size=1, attention_slicing=Toggle.OFF, vae_tiling=Toggle.OFF)
    assert bundle.vae.use_tiling is False
    assert "SlicedAttnProcessor" not in {type(p).__name__ for p in bundle.unet.attn_processors.values()}


def test_cpu_offload_hooks_keep_outputs():
    bundle = tiny_bundle()
    x = torch.randn(1, 4, 8, 8)
    emb = torch.randn(1, 77, 32)
    before = bundle.unet(x, 10, encoder_hidden_states=emb).sample
    enable_cpu_offload(bundle, torch.device("cpu"))
    assert bundle.extra["_cpu_offload"] is True
    assert module_device(bundle.unet) == torch.device("cpu")
    after = bundle.unet(x, 10, encoder_hidden_states=emb).sample
    assert torch.equal(before, after)
    decoded = bundle.vae.decode(torch.randn(1, 4, 8, 8)).sample
    assert decoded.shape == (1, 3, 64, 64)
