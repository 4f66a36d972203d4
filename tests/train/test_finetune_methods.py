"""DreamBooth, textual inversion and full fine-tuning on tiny models: each trains a few steps and its
loss falls, its result is in the format other tools load, and the engine uses it."""

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open

from egaku.engine import Engine, GenerationRequest
from egaku.models import load_model
from egaku.models.embeddings import read_embedding
from egaku.models.lora import read_lora
from egaku.train.finetune import train


def test_dreambooth_full_with_prior_preservation(small, tiny_model_file, tmp_path):
    lines = []
    cfg = small("dreambooth", base=str(tiny_model_file("sd1")), steps=12, lr=1e-3, instance_prompt="a photo of zqx square",
                class_prompt="a photo of a square", num_class_images=3, class_steps=2)
    result = train(cfg, tmp_path / "db", report=lines.append)
    assert "drawing 3 class images of 'a photo of a square' with the base model" in lines
    class_dir = tmp_path / "db" / "class_images"
    assert sorted(p.name for p in class_dir.glob("*.png")) == ["class_0000.png", "class_0001.png", "class_0002.png"]
    assert (class_dir / "class_0000.txt").read_text().strip() == "a photo of a square"
    assert result.report["dataset"]["class_images"] == 3
    assert result.report["fixed_loss"]["after"] < result.report["fixed_loss"]["before"] * 0.9
    # a single-file checkpoint in the LDM layout: it loads like any model, with exactly the trained weights
    loaded = load_model(result.output)
    trained = result.bundle.unet.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in loaded.unet.state_dict().items())


def test_dreambooth_lora_mode(small, tiny_model_file, tmp_path):
    cfg = small("dreambooth", base=str(tiny_model_file("sd1")), steps=4, dreambooth_mode="lora", class_prompt="a square",
                num_class_images=2, class_steps=2)
    assert cfg.lr == 1e-4  # the LoRA learning rate, not full DreamBooth's
    lora = read_lora(train(cfg, tmp_path / "dbl", report=lambda s: None).output)
    assert lora.metadata["ss_num_reg_images"] == "2" and lora.metadata["egaku.method"] == "dreambooth"


def test_textual_inversion_trains_only_its_word_and_the_engine_uses_it(small, tiny_model_file, tmp_path, egaku_home):
    from egaku.models import library

    base = tiny_model_file("sd1")
    cfg = small("embedding", base=str(base), steps=15, lr=0.5, token="zqx", num_vectors=2, init_word="square",
                sample_prompts=["a zqx on a plain background"])
    result = train(cfg, tmp_path / "ti", report=lambda s: None)
    assert result.output.name == "zqx.safetensors"  # A1111: the file's stem is the word
    assert result.report["fixed_loss"]["after"] < result.report["fixed_loss"]["before"]
    with safe_open(str(result.output), "pt") as f:
        assert list(f.keys()) == ["emb_params"] and f.metadata()["name"] == "zqx" and f.metadata()["step"] == "15"
    emb = read_embedding(result.output)
    fresh = load_model(base)
    square = fresh.text_encoder.get_input_embeddings().weight[fresh.tokenizer("square", add_special_tokens=False).input_ids]
    assert emb.vectors["clip_l"].shape == (2, 32) and not torch.allclose(emb.vectors["clip_l"], square.expand(2, -1))
    # the text encoder's own weights did not change
    assert all(torch.equal(v, fresh.text_encoder.state_dict()[k]) for k, v in result.bundle.text_encoder.state_dict().items())
    # in the library, the word in a prompt draws what training's last sample drew
    library.add(result.output)
    engine = Engine(device="cpu", dtype="fp32")
    c = result.report["config"]
    image = engine.generate(GenerationRequest("a zqx on a plain background", model=str(base), steps=c["sample_steps"],
                                              seed=c["seed"], cfg_scale=c["sample_cfg_scale"], sampler=c["sample_sampler"])).images[0]
    sample = Image.open(result.report["samples"][-1])
    assert np.array_equal(np.asarray(image), np.asarray(sample.convert("RGB")))


def test_embedding_as_a1111_pt(small, tmp_path):
    from egaku.models.tiny import tiny_bundle

    cfg = small("embedding", steps=2, output_name="ptword", embedding_format="pt")
    result = train(cfg, tmp_path / "pt", bundle=tiny_bundle("sdxl"), report=lambda s: None)
    data = torch.load(result.output, weights_only=True)
    assert result.output.name == "ptword.pt" and data["name"] == "ptword" and data["step"] == 2
    assert data["string_to_param"]["*"].shape == (1, 32) and data["clip_g"].shape == (1, 32)


def test_full_finetune(small, tiny_model_file, tmp_path):
    cfg = small("finetune", base=str(tiny_model_file("sd1")), steps=10, lr=1e-3, grad_accum=2, batch_size=2,
                lr_scheduler="cosine", warmup_steps=2, gradient_checkpointing=True, save_dtype="fp16")
    result = train(cfg, tmp_path / "ft", report=lambda s: None)
    assert result.report["fixed_loss"]["after"] < result.report["fixed_loss"]["before"] * 0.9
    loaded = load_model(result.output)
    trained = result.bundle.unet.state_dict()
    assert all(torch.equal(v, trained[k].half().float()) for k, v in loaded.unet.state_dict().items())  # saved in fp16


def test_lora_with_prior_preservation_from_a_regularization_folder(small, tiny_model_file, tmp_path):
    """kohya's reg_data_dir: LoRA with the user's own regularization images (a second batch each step)."""
    import pytest

    from egaku.errors import InvalidRequestError

    reg = tmp_path / "reg"
    reg.mkdir()
    for i, color in enumerate([(200, 40, 40), (40, 40, 200), (40, 160, 40)]):
        Image.fromarray(np.full((64, 64, 3), color, np.uint8)).save(reg / f"r{i}.png")
        (reg / f"r{i}.txt").write_text("a plain background\n")
    base = str(tiny_model_file("sd1"))
    plain = train(small("lora", base=base, steps=6, lr=1e-2), tmp_path / "plain", report=lambda s: None)
    result = train(small("lora", base=base, steps=6, lr=1e-2, class_data=str(reg)), tmp_path / "reg-run",
                   report=lambda s: None)
    assert result.report["dataset"]["class_images"] == 3
    lora, lora_plain = read_lora(result.output), read_lora(plain.output)
    assert lora.metadata["ss_num_reg_images"] == "3"
    name = next(iter(lora.layers))
    assert not torch.allclose(lora.layers[name].up, lora_plain.layers[name].up)  # the class batch took part

    with pytest.raises(InvalidRequestError, match=r"training data folder .*missing does not exist"):
        train(small("lora", base=base, class_data=str(tmp_path / "missing")), tmp_path / "bad", report=lambda s: None)
    with pytest.raises(InvalidRequestError, match="class-prompt or class-data, not both"):
        small("lora", class_prompt="a square", class_data=str(reg))
    with pytest.raises(InvalidRequestError, match="does not apply to embeddings"):
        small("embedding", class_prompt="a square")
