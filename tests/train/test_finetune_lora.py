"""LoRA training on tiny models: the loss falls, a kohya file with kohya's metadata, our loader
gives the peft-trained model's outputs, and an interrupted run resumes exactly."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from egaku.engine.extras import apply_loras
from egaku.errors import InvalidRequestError
from egaku.models import load_model
from egaku.models.hashing import sha256_path
from egaku.models.lora import read_lora
from egaku.train.finetune import train


def unet_out(bundle, seed=0):
    """The UNet's noise prediction for a fixed input (and the text encoder's hidden states)."""
    g = torch.Generator().manual_seed(seed)
    ids = bundle.tokenizer(["a zqx square"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        cond = bundle.text_encoder(ids).last_hidden_state  # (1, 77, D)
        x = torch.randn(1, 4, 8, 8, generator=g)
        return bundle.unet(x, torch.tensor([500]), encoder_hidden_states=cond).sample, cond


def test_lora_trains_writes_kohya_and_round_trips(small, tiny_model_file, tmp_path):
    base = tiny_model_file("sd1")
    lines = []
    result = train(small("lora", base=str(base), steps=20, lr=1e-2, train_text_encoder=True,
                         trigger_words=["zqx"]), tmp_path / "zqx-style", report=lines.append)
    assert sum("skipped broken.png: broken.png is not an image" in line for line in lines) == 1
    fixed = result.report["fixed_loss"]
    assert fixed["after"] < fixed["before"] * 0.95
    assert result.complete and result.output == tmp_path / "zqx-style" / "zqx-style.safetensors"

    with safe_open(str(result.output), "pt") as f:
        meta, keys = f.metadata(), list(f.keys())
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_network_dim"] == "4"
    assert meta["ss_network_alpha"] == "4.0" and meta["ss_base_model_version"] == "sd_v1"
    assert meta["ss_max_train_steps"] == "20" and meta["ss_resolution"] == "(64, 64)"
    assert meta["ss_new_sd_model_hash"] == sha256_path(base) and meta["ss_output_name"] == "zqx-style"
    assert json.loads(meta["ss_tag_frequency"])[tiny_model_dir_name(result)]["a zqx square"] == 4
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert json.loads(meta["egaku.trigger_words"]) == ["zqx"]
    assert any(k.startswith("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.") for k in keys)
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj.") for k in keys)
    assert {k.rsplit(".", 2)[-2] if k.endswith(".weight") else "alpha" for k in keys} == {"lora_down", "lora_up", "alpha"}

    report = json.loads((tmp_path / "zqx-style" / "report.json").read_text())
    assert len(report["loss_curve"]) == 20 and report["dataset"]["images"] == 4
    assert report["dataset"]["skipped"][0]["file"] == "broken.png"
    assert report["config"]["lr"] == 1e-2 and (tmp_path / "zqx-style" / "report.png").stat().st_size > 1000
    assert (tmp_path / "zqx-style" / "samples" / "step_000020.png").exists()

    # our kohya writer -> our loader (weights merged into a fresh base model) = the peft-applied model
    trained = load_model(base)
    apply_loras(trained, [(read_lora(result.output), 1.0)])
    peft_model = result.bundle  # the base with peft's LoRA layers injected, as training left it
    (a, cond_a), (b, cond_b) = unet_out(peft_model), unet_out(trained)
    assert torch.allclose(cond_a, cond_b, atol=1e-5) and torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, unet_out(load_model(base))[0], atol=1e-3)  # and the LoRA does something


def test_conv_lora_adapts_resnet_convs_and_round_trips(small, tiny_model_file, tmp_path):
    """kohya's LoRA-C3Lier layout: 3x3 conv layers as (r, in, 3, 3) down and (out, r, 1, 1) up."""
    base = tiny_model_file("sd1")
    result = train(small("lora", base=str(base), steps=3, lr=1e-2, lora_targets="conv"), tmp_path / "c",
                   report=lambda s: None)
    lora = read_lora(result.output)
    conv = lora.layers["lora_unet_down_blocks_0_resnets_0_conv1"]
    assert conv.down.shape[2:] == (3, 3) and conv.up.shape[2:] == (1, 1)
    assert "lora_unet_down_blocks_0_downsamplers_0_conv" in lora.layers
    assert json.loads(lora.metadata["ss_network_args"]) == {"conv_dim": "4", "conv_alpha": "4.0"}
    trained = load_model(base)
    apply_loras(trained, [(lora, 1.0)])
    a, b = unet_out(result.bundle)[0], unet_out(trained)[0]
    assert torch.allclose(a, b, atol=1e-5)


def tiny_model_dir_name(result) -> str:
    from pathlib import Path

    return Path(result.report["dataset"]["folder"]).name


def test_resume_is_exact(small, tiny_model_file, tmp_path):
    base = str(tiny_model_file("sd1"))
    straight = train(small("lora", base=base, steps=4, lr=1e-2), tmp_path / "a", report=lambda s: None)
    train(small("lora", base=base, steps=2, lr=1e-2), tmp_path / "b", report=lambda s: None)
    lines = []
    resumed = train(small("lora", base=base, steps=4, lr=1e-2), tmp_path / "b", report=lines.append)
    assert "resuming at step 2 of 4" in lines
    a, b = load_file(straight.output), load_file(resumed.output)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert straight.report["loss_curve"] == resumed.report["loss_curve"]
    with pytest.raises(InvalidRequestError, match="other settings \\(rank\\)"):
        train(small("lora", base=base, steps=6, lr=1e-2, rank=8), tmp_path / "b", report=lambda s: None)


def test_sdxl_lora_with_both_text_encoders(small, tmp_path):
    from egaku.models.lora import module_table
    from egaku.models.tiny import tiny_bundle

    result = train(small("lora", steps=3, lr=1e-2, train_text_encoder=True), tmp_path / "xl",
                   bundle=tiny_bundle("sdxl"), report=lambda s: None)
    lora = read_lora(result.output)
    assert lora.metadata["ss_base_model_version"] == "sdxl_base_v1-0"
    for prefix in ("lora_te1_text_model_", "lora_te2_text_model_", "lora_unet_input_blocks_", "lora_unet_output_blocks_"):
        assert any(name.startswith(prefix) for name in lora.layers), prefix
    assert set(lora.layers) <= set(module_table(tiny_bundle("sdxl")))  # every layer names a module of the model
    (a, cond_a), (b, cond_b) = unet_out_xl(result.bundle), unet_out_xl(tiny_bundle("sdxl"), lora)
    assert torch.allclose(cond_a, cond_b, atol=1e-5) and torch.allclose(a, b, atol=1e-5)


def unet_out_xl(bundle, lora=None):
    from egaku.train.finetune.model import encode_prompts

    if lora is not None:
        apply_loras(bundle, [(lora, 1.0)])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        cond, pooled = encode_prompts(bundle, ["a zqx square"], torch.device("cpu"))
        time_ids = torch.tensor([[64.0, 64, 0, 0, 64, 64]])
        x = torch.randn(1, 4, 8, 8, generator=g)
        out = bundle.unet(x, torch.tensor([500]), encoder_hidden_states=cond,
                          added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
    return out, cond
