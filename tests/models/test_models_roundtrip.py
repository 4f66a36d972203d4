"""Detection per family, export -> import round trips, and the shipped standard configs."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from egaku.models import ModelFamily, export_single_file, load_model
from egaku.models.detect import plan_single_file, standard_config
from egaku.models.export import ldm_state_dict
from egaku.models.ldm import text_rules, to_ldm, unet_rules, vae_rules
from egaku.models.loader import empty_text_encoder, empty_unet, empty_vae
from egaku.models.tiny import tiny_bundle

VARIANTS = [  # (family, kwargs, modelspec architecture)
    ("sd1", {}, "stable-diffusion-v1"),
    ("sd2", {}, "stable-diffusion-v2-512"),
    ("sd2", {"v_prediction": True}, "stable-diffusion-v2-768-v"),
    ("sdxl", {}, "stable-diffusion-xl-v1-base"),
    ("sd1", {"inpaint": True}, "stable-diffusion-v1/inpaint"),
]


def _unet_out(bundle):
    unet = bundle.unet
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, unet.config.in_channels, 8, 8, generator=g)  # (B, C, H, W)
    ctx = torch.randn(1, 77, unet.config.cross_attention_dim, generator=g)  # (B, T, D)
    extra = {}
    if bundle.family is ModelFamily.SDXL:
        pooled = bundle.text_encoder_2.config.projection_dim
        extra["added_cond_kwargs"] = {"text_embeds": torch.randn(1, pooled, generator=g), "time_ids": torch.randn(1, 6, generator=g)}
    return unet(x, 10, encoder_hidden_states=ctx, **extra).sample  # (B, C, H, W)


def _same_weights(a, b):
    for attr in ("unet", "vae", "text_encoder", "text_encoder_2"):
        ma, mb = getattr(a, attr), getattr(b, attr)
        if ma is None:
            assert mb is None
            continue
        sa, sb = ma.state_dict(), mb.state_dict()
        assert sa.keys() == sb.keys(), attr
        assert all(torch.equal(sa[k], sb[k]) for k in sa), attr


@pytest.mark.parametrize("family,kwargs,arch", VARIANTS, ids=["sd1", "sd2", "sd2-v", "sdxl", "sd1-inpaint"])
def test_export_import_round_trip(tmp_path, family, kwargs, arch):
    original = tiny_bundle(family, **kwargs)
    path = export_single_file(original, tmp_path / "model.safetensors")
    with safe_open(str(path), "pt") as f:
        meta, keys = f.metadata(), set(f.keys())
    assert meta["modelspec.architecture"] == arch
    assert json.loads(meta["egaku.unet_config"])["block_out_channels"] == [32, 64]
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys and "first_stage_model.decoder.conv_out.weight" in keys

    loaded = load_model(path)
    assert loaded.family == family
    assert loaded.is_inpaint == kwargs.get("inpaint", False)
    assert loaded.prediction_type == ("v_prediction" if kwargs.get("v_prediction") else "epsilon")
    assert loaded.default_size == 64 and loaded.short_hash == loaded.sha256[:10]
    assert not loaded.unet.training and not any(p.requires_grad for p in loaded.unet.parameters())
    _same_weights(original, loaded)
    assert torch.equal(_unet_out(loaded), _unet_out(original))
    assert loaded.vae.config.norm_num_groups == 8
    heads = original.unet.config.attention_head_dim
    assert loaded.unet.config.attention_head_dim == (list(heads) if isinstance(heads, tuple) else heads)


def test_sdxl_ldm_keys_match_sgm_layout():
    sd = ldm_state_dict(tiny_bundle("sdxl"))
    assert sd["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"].shape == (96, 32)
    assert sd["conditioner.embedders.1.model.text_projection"].shape == (32, 32)
    assert "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight" in sd
    assert sd["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (16, 16, 1, 1)
    assert "model.diffusion_model.label_emb.0.0.weight" in sd
    assert "model.diffusion_model.output_blocks.1.2.conv.weight" in sd  # upsampler after an attention block


@pytest.mark.parametrize("family,kwargs", [("sd1", {}), ("sd2", {}), ("sdxl", {}), ("sdxl", {"inpaint": True})])
def test_detection_without_metadata(tmp_path, family, kwargs):
    """A file with bare LDM keys (as A1111 writes them) is detected from its tensors alone."""
    original = tiny_bundle(family, **kwargs)
    path = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in ldm_state_dict(original).items()}, path)
    loaded = load_model(path, prediction_type="epsilon" if family == "sd2" else None)
    assert (loaded.family, loaded.is_inpaint) == (family, kwargs.get("inpaint", False))
    assert loaded.extra["prediction_source"] == ("override" if family == "sd2" else "family default")
    assert list(loaded.unet.config.block_out_channels) == [32, 64]
    _same_weights(original, loaded)
    if family != "sd2":  # SD1 and SDXL tiny heads match the standard rule; SD2's need the metadata
        assert torch.equal(_unet_out(loaded), _unet_out(original))


def test_v_prediction_from_v_pred_key_and_override(tmp_path):
    sd = {k: v.contiguous() for k, v in ldm_state_dict(tiny_bundle("sd1")).items()}
    sd["v_pred"] = torch.tensor([])
    path = tmp_path / "vpred.safetensors"
    save_file(sd, path)
    assert load_model(path).prediction_type == "v_prediction"
    assert load_model(path, prediction_type="epsilon").prediction_type == "epsilon"


def test_sd2_probe_decides_when_nothing_else_does(tmp_path):
    path = tmp_path / "sd2.safetensors"
    save_file({k: v.contiguous() for k, v in ldm_state_dict(tiny_bundle("sd2")).items()}, path)
    loaded = load_model(path)
    assert loaded.extra["prediction_source"] == "probe"
    assert loaded.prediction_type in ("epsilon", "v_prediction")


def _meta_ldm_shapes(name):
    """LDM key -> shape of a standard architecture, built on the meta device (no memory)."""
    shapes = {}
    unet, vae = empty_unet(standard_config(name, "unet")), empty_vae(standard_config(name, "vae"))
    shapes.update({k: tuple(v.shape) for k, v in to_ldm(unet.state_dict(), unet_rules(unet.state_dict(), unet.config)).items()})
    shapes.update({k: tuple(v.shape) for k, v in to_ldm(vae.state_dict(), vae_rules(vae.state_dict(), vae.config)).items()})
    from egaku.models.detect import SPECS

    family = {"sd15": ModelFamily.SD1, "sd2-v": ModelFamily.SD2, "sdxl": ModelFamily.SDXL}[name]
    for enc in SPECS[family].text_encoders:
        te = empty_text_encoder(standard_config(name, enc.attr), with_projection=enc.attr == "text_encoder_2")
        sd = te.state_dict()
        shapes.update({k: tuple(v.shape) for k, v in to_ldm(sd, text_rules(sd, enc.layout, enc.prefix)).items()})
    return shapes, unet, vae


@pytest.mark.parametrize("name,params", [("sd15", 859_520_964), ("sdxl", 2_567_463_684)])
def test_standard_configs_describe_the_real_models(name, params):
    shapes, unet, vae = _meta_ldm_shapes(name)
    assert next(unet.parameters()).is_meta
    assert sum(p.numel() for p in unet.parameters()) == params
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863
    plan = plan_single_file(shapes, {})
    for component in ("unet", "vae", "text_encoder"):
        expected = standard_config(name, component)
        got = plan.configs[component]
        for key in ("block_out_channels", "cross_attention_dim", "attention_head_dim", "transformer_layers_per_block",
                    "hidden_size", "num_hidden_layers", "num_attention_heads", "scaling_factor", "in_channels"):
            if key in expected:
                assert got[key] == expected[key], (component, key)


def test_real_sd2_v_detects_and_needs_the_probe():
    shapes, _, _ = _meta_ldm_shapes("sd2-v")
    assert shapes["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"] == (3072, 1024)
    plan = plan_single_file(shapes, {})
    assert plan.family is ModelFamily.SD2 and plan.prediction_type is None and plan.prediction_source == "probe"
    assert plan.configs["unet"]["attention_head_dim"] == [5, 10, 20, 20]
    assert plan.configs["unet"]["use_linear_projection"] is True
    assert plan.configs["text_encoder"]["num_hidden_layers"] == 23
    xl = plan_single_file(_meta_ldm_shapes("sdxl")[0], {})
    assert xl.configs["unet"]["addition_time_embed_dim"] == 256
    assert xl.configs["text_encoder_2"]["projection_dim"] == 1280
