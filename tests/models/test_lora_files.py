"""LoRA and embedding files: kohya and diffusers/peft layouts read alike, kohya written as A1111
expects, A1111 embedding formats both ways, and LoRAs/embeddings in the library."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from egaku.engine.extras import apply_loras
from egaku.errors import ModelLoadError, UnsafeCheckpointError
from egaku.models.embeddings import Embedding, read_embedding, write_embedding
from egaku.models.lora import LoraLayer, addnet_hash_file, kohya_name, read_lora, write_kohya
from egaku.models.tiny import tiny_bundle


def attention_layers(bundle, attrs=("unet", "text_encoder"), seed=0, rank=2):
    """{(attr, module path): (down, up)} random, for every q/k/v projection of `attrs`."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for attr in attrs:
        for name, m in getattr(bundle, attr).named_modules():
            if isinstance(m, torch.nn.Linear) and name.endswith(("to_q", "to_k", "to_v", "to_out.0", "q_proj", "k_proj")):
                out[(attr, name)] = (torch.randn(rank, m.in_features, generator=g), torch.randn(m.out_features, rank, generator=g))
    return out


def merged_weights(family, lora_file) -> dict[str, torch.Tensor]:
    bundle = tiny_bundle(family)
    apply_loras(bundle, [(read_lora(lora_file), 1.0)], keep_backup=False)
    return {f"{a}.{k}": v for a in ("unet", "text_encoder", "text_encoder_2") if getattr(bundle, a) is not None
            for k, v in getattr(bundle, a).state_dict().items()}


def test_kohya_file_layout_and_metadata(tmp_path):
    bundle = tiny_bundle("sd1")
    layers = {kohya_name(bundle, a, n): LoraLayer(d, u, 1.0) for (a, n), (d, u) in attention_layers(bundle).items()}
    path = write_kohya(tmp_path / "style.safetensors", layers, {"ss_network_dim": "2", "ss_network_alpha": "1.0"})
    with safe_open(str(path), "pt") as f:
        keys, meta = set(f.keys()), f.metadata()
        alpha = f.get_tensor("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha")
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_out_0.lora_up.weight" in keys
    assert "lora_te_text_model_encoder_layers_1_self_attn_k_proj.lora_down.weight" in keys
    assert alpha.ndim == 0 and float(alpha) == 1.0
    assert meta["ss_network_dim"] == "2" and meta["sshs_model_hash"] == addnet_hash_file(path)
    lora = read_lora(path)
    assert (lora.layout, len(lora.layers), lora.name) == ("kohya", len(layers), "style")
    name = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    assert torch.equal(lora.layers[name].down, layers[name].down) and lora.layers[name].scale == 0.5


def test_sdxl_kohya_names_are_the_ldm_ones(tmp_path):
    bundle = tiny_bundle("sdxl")
    pairs = attention_layers(bundle, attrs=("unet", "text_encoder", "text_encoder_2"))
    names = {kohya_name(bundle, a, n) for a, n in pairs}
    # down_blocks.1.attentions.0 is input_blocks.3.1 with one layer per block (4.1 in the real SDXL, two per block)
    assert "lora_unet_input_blocks_3_1_transformer_blocks_1_attn2_to_k" in names
    assert any(n.startswith("lora_te1_text_model_encoder_layers_") for n in names)
    assert any(n.startswith("lora_te2_text_model_encoder_layers_") for n in names)
    # the same LoRA under diffusers UNet names (as some SDXL tools write) loads onto the same modules
    ldm = {kohya_name(bundle, a, n): LoraLayer(d, u, 2.0) for (a, n), (d, u) in pairs.items()}
    diffusers_names = {(f"lora_unet_{n.replace('.', '_')}" if a == "unet" else kohya_name(bundle, a, n)): LoraLayer(d, u, 2.0)
                       for (a, n), (d, u) in pairs.items()}
    write_kohya(tmp_path / "ldm.safetensors", ldm)
    write_kohya(tmp_path / "diffusers.safetensors", diffusers_names)
    a, b = merged_weights("sdxl", tmp_path / "ldm.safetensors"), merged_weights("sdxl", tmp_path / "diffusers.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    untouched = tiny_bundle("sdxl").unet.state_dict()
    key = "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight"
    assert not torch.equal(a[f"unet.{key}"], untouched[key])


@pytest.mark.parametrize("layout", ["peft", "lora.down", "processor", "peft-raw"])
def test_diffusers_and_peft_layouts_load_like_kohya(tmp_path, layout):
    bundle = tiny_bundle("sd1")
    pairs = attention_layers(bundle, attrs=("unet",) if layout == "peft-raw" else ("unet", "text_encoder"))
    kohya = {kohya_name(bundle, a, n): LoraLayer(d, u, 1.0) for (a, n), (d, u) in pairs.items()}
    write_kohya(tmp_path / "kohya.safetensors", kohya)
    tensors, metadata = {}, {}
    for (attr, name), (down, up) in pairs.items():
        prefix = {"unet": "unet.", "text_encoder": "text_encoder.text_model."}[attr] + name
        if layout == "peft":
            tensors[f"{prefix}.lora_A.weight"], tensors[f"{prefix}.lora_B.weight"] = down, up
        elif layout == "peft-raw":
            tensors[f"base_model.model.{name}.lora_A.weight"], tensors[f"base_model.model.{name}.lora_B.weight"] = down, up
        elif layout == "lora.down":
            tensors[f"{prefix}.lora.down.weight"], tensors[f"{prefix}.lora.up.weight"] = down, up
            tensors[f"{prefix}.alpha"] = torch.tensor(1.0)
        elif attr == "unet":  # old attention processors: attn1.processor.to_q_lora.down.weight
            parent, proj = name.rsplit(".", 1) if not name.endswith("to_out.0") else (name[: -len(".to_out.0")], "to_out")
            tensors[f"unet.{parent}.processor.{proj}_lora.down.weight"] = down
            tensors[f"unet.{parent}.processor.{proj}_lora.up.weight"] = up
        else:
            tensors[f"text_encoder.{name}.lora_linear_layer.down.weight"] = down
            tensors[f"text_encoder.{name}.lora_linear_layer.up.weight"] = up
    if layout in ("peft", "peft-raw", "processor"):  # alpha from diffusers' header, lora_alpha / r = 1 / 2
        metadata["lora_adapter_metadata"] = json.dumps({"unet.lora_alpha": 1, "unet.r": 2, "text_encoder.lora_alpha": 1,
                                                        "text_encoder.r": 2})
    save_file(tensors, tmp_path / "other.safetensors", metadata=metadata)
    other = read_lora(tmp_path / "other.safetensors")
    assert other.layout == ("peft" if layout == "peft-raw" else "diffusers")
    assert set(other.layers) == {n.replace("lora_te_", "lora_te1_") for n in kohya}  # te and te1 are aliases
    a, b = merged_weights("sd1", tmp_path / "kohya.safetensors"), merged_weights("sd1", tmp_path / "other.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_files_that_are_not_plain_loras(tmp_path):
    save_file({"model.diffusion_model.out.2.weight": torch.zeros(4, 4)}, tmp_path / "ckpt.safetensors")
    with pytest.raises(ModelLoadError, match="holds no LoRA layers"):
        read_lora(tmp_path / "ckpt.safetensors")
    save_file({"lora_unet_a_b.hada_w1_a": torch.zeros(2, 2), "lora_unet_a_b.hada_w1_b": torch.zeros(2, 2)},
              tmp_path / "loha.safetensors")
    with pytest.raises(ModelLoadError, match="LoHa"):
        read_lora(tmp_path / "loha.safetensors")
    (tmp_path / "trunc.safetensors").write_bytes((tmp_path / "ckpt.safetensors").read_bytes()[:40])
    with pytest.raises(ModelLoadError, match="trunc.safetensors"):
        read_lora(tmp_path / "trunc.safetensors")


def _kron(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Kronecker product by its definition, (a ⊗ b)[i*p + k, j*q + l, ...] = a[i, j] * b[k, l, ...]."""
    (m, n), (p, q), kernel = a.shape, b.shape[:2], b.shape[2:]
    extra = (None,) * len(kernel)
    return (a[(slice(None), None, slice(None), None) + extra] * b[None, :, None]).reshape(m * p, n * q, *kernel)


def _cp(t, a, b):
    """A CP kernel by hand: W[:, :, k, l] = a.T @ t[:, :, k, l] @ b."""
    out = torch.empty(a.shape[1], b.shape[1], *t.shape[2:])
    for k in range(t.shape[2]):
        for l in range(t.shape[3]):
            out[:, :, k, l] = a.T @ t[:, :, k, l] @ b
    return out


def test_loha_and_lokr_layers_merge_as_lycoris_defines_them(tmp_path):
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    q, conv = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", "lora_unet_down_blocks_0_resnets_0_conv1"
    te = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    loha = {f"{q}.hada_w1_a": r(32, 4), f"{q}.hada_w1_b": r(4, 32), f"{q}.hada_w2_a": r(32, 4), f"{q}.hada_w2_b": r(4, 32),
            f"{q}.alpha": torch.tensor(2.0),
            f"{conv}.hada_w1_a": r(4, 32), f"{conv}.hada_w1_b": r(4, 32), f"{conv}.hada_t1": r(4, 4, 3, 3),
            f"{conv}.hada_w2_a": r(4, 32), f"{conv}.hada_w2_b": r(4, 32), f"{conv}.hada_t2": r(4, 4, 3, 3)}
    lokr = {f"{q}.lokr_w1": r(2, 4), f"{q}.lokr_w2_a": r(16, 2), f"{q}.lokr_w2_b": r(2, 8), f"{q}.alpha": torch.tensor(1.0),
            f"{conv}.lokr_w1": r(4, 2), f"{conv}.lokr_w2": r(8, 16, 3, 3),
            f"{te}.lokr_w1_a": r(8, 2), f"{te}.lokr_w1_b": r(2, 4), f"{te}.lokr_w2": r(4, 8)}
    save_file(loha, tmp_path / "loha.safetensors")
    save_file(lokr, tmp_path / "lokr.safetensors")
    bundle = tiny_bundle("sd1")
    before = {k: v.clone() for k, v in bundle.unet.state_dict().items()}
    te_before = {k: v.clone() for k, v in bundle.text_encoder.state_dict().items()}
    a, k = loha, lokr  # expected deltas, by the formulas' definitions
    expect_loha = {
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight":
            (a[f"{q}.hada_w1_a"] @ a[f"{q}.hada_w1_b"]) * (a[f"{q}.hada_w2_a"] @ a[f"{q}.hada_w2_b"]) * 2.0 / 4,
        "down_blocks.0.resnets.0.conv1.weight":
            _cp(a[f"{conv}.hada_t1"], a[f"{conv}.hada_w1_a"], a[f"{conv}.hada_w1_b"])
            * _cp(a[f"{conv}.hada_t2"], a[f"{conv}.hada_w2_a"], a[f"{conv}.hada_w2_b"]),  # no alpha: scale 1
    }
    expect_lokr = {
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight":
            _kron(k[f"{q}.lokr_w1"], k[f"{q}.lokr_w2_a"] @ k[f"{q}.lokr_w2_b"]) * 1.0 / 2,
        "down_blocks.0.resnets.0.conv1.weight": _kron(k[f"{conv}.lokr_w1"], k[f"{conv}.lokr_w2"]),
    }
    lora = read_lora(tmp_path / "loha.safetensors")
    assert len(lora.layers) == 2 and lora.unsupported == [] and lora.layers[q].rank == 4
    apply_loras(bundle, [(lora, 0.5)], keep_backup=False)
    after = bundle.unet.state_dict()
    for key, delta in expect_loha.items():
        torch.testing.assert_close(after[key], before[key] + 0.5 * delta, rtol=1e-4, atol=1e-4)
    bundle = tiny_bundle("sd1")
    apply_loras(bundle, [(read_lora(tmp_path / "lokr.safetensors"), 1.0)], keep_backup=False)
    after = bundle.unet.state_dict()
    for key, delta in expect_lokr.items():
        torch.testing.assert_close(after[key], before[key] + delta, rtol=1e-4, atol=1e-4)
    te_key = next(key for key in te_before if key.endswith("layers.0.self_attn.q_proj.weight"))
    torch.testing.assert_close(bundle.text_encoder.state_dict()[te_key],
                               te_before[te_key] + _kron(k[f"{te}.lokr_w1_a"] @ k[f"{te}.lokr_w1_b"], k[f"{te}.lokr_w2"]),
                               rtol=1e-4, atol=1e-4)  # alpha-less: scale 1
    # a LoKr made for another model is refused before any weight changes
    save_file({f"{q}.lokr_w1": r(2, 2), f"{q}.lokr_w2": r(8, 8)}, tmp_path / "small.safetensors")
    with pytest.raises(ModelLoadError, match=r"layer .*attn1_to_q is \(16, 16\), the model's weight is \(32, 32\)"):
        apply_loras(tiny_bundle("sd1"), [(read_lora(tmp_path / "small.safetensors"), 1.0)])


def test_embedding_formats(tmp_path):
    v = torch.randn(3, 32)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": v}, "name": "x", "step": 120}, tmp_path / "a1111.pt")
    save_file({"emb_params": v}, tmp_path / "st.safetensors")
    torch.save({"<cat-toy>": v[0]}, tmp_path / "learned_embeds.bin")  # diffusers' textual_inversion.py output
    save_file({"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}, tmp_path / "xl.safetensors")
    a = read_embedding(tmp_path / "a1111.pt")
    assert (a.name, a.step, a.num_vectors) == ("a1111", 120, 3) and torch.equal(a.vectors["clip_l"], v)
    assert torch.equal(read_embedding(tmp_path / "st.safetensors").vectors["clip_l"], v)
    assert read_embedding(tmp_path / "learned_embeds.bin").vectors["clip_l"].shape == (1, 32)
    xl = read_embedding(tmp_path / "xl.safetensors")
    assert (xl.family, xl.num_vectors, set(xl.vectors)) == ("sdxl", 2, {"clip_l", "clip_g"})
    for suffix in ("safetensors", "pt"):  # what egaku writes, A1111 reads (and egaku too)
        out = write_embedding(tmp_path / f"mine.{suffix}", Embedding("mine", {"clip_l": v}, step=7), "ab" * 32, "base")
        back = read_embedding(out)
        assert torch.equal(back.vectors["clip_l"], v) and back.step == 7
    data = torch.load(tmp_path / "mine.pt", weights_only=True)
    assert data["name"] == "mine" and torch.equal(data["string_to_param"]["*"], v)


def test_embedding_pickle_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"string_to_param": {"*": torch.zeros(1, 4)}, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError):
        read_embedding(tmp_path / "evil.pt")


def test_loras_and_embeddings_in_the_library(tmp_path, egaku_home, capsys):
    from egaku.cli.main import main
    from egaku.models import library
    from egaku.models.library_extras import ModelKind, detect_kind, list_extras, resolve_extra

    bundle = tiny_bundle("sd1")
    layers = {kohya_name(bundle, a, n): LoraLayer(d, u, 2.0) for (a, n), (d, u) in attention_layers(bundle).items()}
    meta = {"ss_base_model_version": "sd_v1", "ss_tag_frequency": json.dumps({"imgs": {"zqx style": 9, "red": 2}})}
    lora_path = write_kohya(tmp_path / "My Style.safetensors", layers, meta)
    emb_path = write_embedding(tmp_path / "thing.pt", Embedding("thing", {"clip_l": torch.randn(2, 768)}))
    assert detect_kind(lora_path) is ModelKind.LORA and detect_kind(emb_path) is ModelKind.EMBEDDING
    lora = library.add(lora_path)  # `add` sends LoRAs to their own folder
    assert (lora.name, lora.kind, lora.family, lora.rank, lora.alpha) == ("My-Style", "lora", "sd1", 2, 2.0)
    assert lora.trigger_words == ["zqx style"] and lora.autov2 == lora.sha256[:10]  # the tag of (nearly) every caption
    assert resolve_extra("lora", "My-Style") == egaku_home / "models" / "loras" / "My-Style.safetensors"
    assert library.add(lora_path).name == "My-Style"  # same bytes: the existing entry
    library.add(emb_path)
    # a file copied into the folder by hand is found by its stem, as A1111 finds it
    (egaku_home / "models" / "loras" / "dropped.safetensors").write_bytes(lora_path.read_bytes())
    assert [e.name for e in list_extras("lora")] == ["dropped", "My-Style"]
    assert main(["models", "list"]) == 0
    listed = capsys.readouterr().out
    assert "My-Style" in listed and "zqx style" in listed and lora.autov2 in listed and "thing" in listed
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["name"], r["kind"]) for r in rows} == {("My-Style", "lora"), ("dropped", "lora"), ("thing", "embedding")}
    assert main(["models", "remove", "My-Style"]) == 0
    assert [e.name for e in list_extras("lora")] == ["dropped"]


def test_dora_layers_renormalise_the_merged_weight_to_their_magnitude(tmp_path):
    """DoRA (Liu et al. 2024): W' = m * (W + dW) / ||W + dW||, at strength s W + s (W' - W), as A1111
    and ComfyUI merge it. kohya files hold m per input column (1, in), peft per output row (out,)."""
    g = torch.Generator().manual_seed(1)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    q, conv = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", "lora_unet_down_blocks_0_resnets_0_conv1"
    q_key, conv_key = ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
                       "down_blocks.0.resnets.0.conv1.weight")
    kohya = {f"{q}.lora_down.weight": r(4, 32), f"{q}.lora_up.weight": r(32, 4), f"{q}.alpha": torch.tensor(2.0),
             f"{q}.dora_scale": r(1, 32).abs(),
             f"{conv}.hada_w1_a": r(32, 2), f"{conv}.hada_w1_b": r(2, 32 * 9), f"{conv}.hada_w2_a": r(32, 2),
             f"{conv}.hada_w2_b": r(2, 32 * 9), f"{conv}.dora_scale": r(1, 32, 1, 1).abs()}
    save_file(kohya, tmp_path / "dora.safetensors")
    before = tiny_bundle("sd1").unet.state_dict()
    w, k = before[q_key], kohya
    merged = w + k[f"{q}.lora_up.weight"] @ k[f"{q}.lora_down.weight"] * 2.0 / 4
    column_norm = torch.stack([merged[:, j].norm() for j in range(32)])  # (in,)
    dora_q = merged * k[f"{q}.dora_scale"] / column_norm
    wc = before[conv_key]
    merged_c = wc + ((k[f"{conv}.hada_w1_a"] @ k[f"{conv}.hada_w1_b"]) * (k[f"{conv}.hada_w2_a"] @ k[f"{conv}.hada_w2_b"])).reshape(wc.shape)
    column_norm_c = torch.stack([merged_c[:, j].norm() for j in range(32)])
    dora_c = merged_c * k[f"{conv}.dora_scale"] / column_norm_c[None, :, None, None]

    lora = read_lora(tmp_path / "dora.safetensors")
    assert len(lora.layers) == 2 and lora.unsupported == [] and lora.layers[q].rank == 4
    bundle = tiny_bundle("sd1")
    apply_loras(bundle, [(lora, 0.7)], keep_backup=False)
    after = bundle.unet.state_dict()
    torch.testing.assert_close(after[q_key], w + 0.7 * (dora_q - w), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(after[conv_key], wc + 0.7 * (dora_c - wc), rtol=1e-4, atol=1e-4)
    # at strength 1 each input column's norm is the file's magnitude
    bundle = tiny_bundle("sd1")
    apply_loras(bundle, [(lora, 1.0)], keep_backup=False)
    got = bundle.unet.state_dict()[q_key]
    torch.testing.assert_close(got.norm(dim=0), k[f"{q}.dora_scale"][0], rtol=1e-4, atol=1e-4)

    # peft: lora_A/lora_B and the magnitude of each output row
    peft = {"base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": k[f"{q}.lora_down.weight"],
            "base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": k[f"{q}.lora_up.weight"],
            "base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_magnitude_vector": r(32).abs()}
    save_file(peft, tmp_path / "peft_dora.safetensors")
    bundle = tiny_bundle("sd1")
    apply_loras(bundle, [(read_lora(tmp_path / "peft_dora.safetensors"), 1.0)], keep_backup=False)
    merged = w + k[f"{q}.lora_up.weight"] @ k[f"{q}.lora_down.weight"]  # no alpha: scale 1
    m = peft["base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_magnitude_vector"]
    torch.testing.assert_close(bundle.unet.state_dict()[q_key], merged * (m / merged.norm(dim=1))[:, None],
                               rtol=1e-4, atol=1e-4)
    # a magnitude that fits neither axis of the weight is refused before any weight changes
    save_file({**{key: v for key, v in kohya.items() if key.startswith(q)}, f"{q}.dora_scale": r(1, 16)},
              tmp_path / "bad.safetensors")
    bundle = tiny_bundle("sd1")
    with pytest.raises(ModelLoadError, match=r"layer .*attn1_to_q is DoRA magnitude \(1, 16\), the model.s weight is \(32, 32\)"):
        apply_loras(bundle, [(read_lora(tmp_path / "bad.safetensors"), 1.0)])
    assert torch.equal(bundle.unet.state_dict()[q_key], w)


def test_locon_with_a_tucker_core_merges_as_up_mid_down(tmp_path):
    """LoCon convolutions with `lora_mid` (LyCORIS use_tucker): W += up · mid · down · α/r."""
    g = torch.Generator().manual_seed(2)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    conv, key = "lora_unet_down_blocks_0_resnets_0_conv1", "down_blocks.0.resnets.0.conv1.weight"
    down, mid, up = r(4, 32, 1, 1), r(4, 4, 3, 3), r(32, 4, 1, 1)
    save_file({f"{conv}.lora_down.weight": down, f"{conv}.lora_mid.weight": mid, f"{conv}.lora_up.weight": up,
               f"{conv}.alpha": torch.tensor(2.0)}, tmp_path / "locon.safetensors")
    lora = read_lora(tmp_path / "locon.safetensors")
    assert lora.unsupported == [] and lora.layers[conv].delta_shape == (32, 32, 3, 3)
    bundle = tiny_bundle("sd1")
    before = bundle.unet.state_dict()[key].clone()
    apply_loras(bundle, [(lora, 1.0)], keep_backup=False)
    expected = _cp(mid, up.flatten(1).T, down.flatten(1)) * 2.0 / 4
    torch.testing.assert_close(bundle.unet.state_dict()[key], before + expected, rtol=1e-4, atol=1e-4)
    # written back in kohya's layout with its core, and read to the same merge
    write_kohya(tmp_path / "again.safetensors", lora.layers)
    bundle = tiny_bundle("sd1")
    apply_loras(bundle, [(read_lora(tmp_path / "again.safetensors"), 1.0)], keep_backup=False)
    torch.testing.assert_close(bundle.unet.state_dict()[key], before + expected, rtol=1e-4, atol=1e-4)


def test_lycoris_full_layers_add_their_weight_and_bias_differences(tmp_path):
    """LyCORIS `algo=full` files (`diff`, `diff_b`): W += s·diff and b += s·diff_b, undone exactly;
    a bias difference for a module without a bias is a one-line error before any weight changes."""
    from egaku.engine.extras import restore_loras

    g = torch.Generator().manual_seed(3)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    conv, conv_key = "lora_unet_down_blocks_0_resnets_0_conv1", "down_blocks.0.resnets.0.conv1"
    q, q_key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", \
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    diff, diff_b, diff_q = r(32, 32, 3, 3), r(32), r(32, 32)
    save_file({f"{conv}.diff": diff, f"{conv}.diff_b": diff_b, f"{q}.diff": diff_q}, tmp_path / "full.safetensors")
    lora = read_lora(tmp_path / "full.safetensors")
    assert lora.unsupported == [] and lora.layers[conv].delta_shape == (32, 32, 3, 3)
    bundle = tiny_bundle("sd1")
    before = {k: v.clone() for k, v in bundle.unet.state_dict().items()}
    apply_loras(bundle, [(lora, 0.5)])
    after = bundle.unet.state_dict()
    torch.testing.assert_close(after[f"{conv_key}.weight"], before[f"{conv_key}.weight"] + 0.5 * diff)
    torch.testing.assert_close(after[f"{conv_key}.bias"], before[f"{conv_key}.bias"] + 0.5 * diff_b)
    torch.testing.assert_close(after[f"{q_key}.weight"], before[f"{q_key}.weight"] + 0.5 * diff_q)
    assert restore_loras(bundle)
    assert all(torch.equal(v, before[k]) for k, v in bundle.unet.state_dict().items())

    save_file({f"{q}.diff": diff_q, f"{q}.diff_b": diff_b}, tmp_path / "bad.safetensors")  # to_q has no bias
    with pytest.raises(ModelLoadError, match=r"layer .*attn1_to_q is bias \(32,\), the model.s bias is absent"):
        apply_loras(bundle, [(read_lora(tmp_path / "bad.safetensors"), 1.0)])
    assert all(torch.equal(v, before[k]) for k, v in bundle.unet.state_dict().items())
