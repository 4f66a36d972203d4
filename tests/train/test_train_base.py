"""Base-model training on a tiny config: the loss falls, and an interrupted run resumes exactly."""

import json
import shutil

import pytest
import torch

from egaku.models.tiny import TOKENIZER_DIR, _clip_config, tiny_vae
from egaku.train.base import (
    BUILTIN_CONFIG_DIR,
    BaseTrainConfig,
    _load_components,
    build_pool,
    fixed_batch_loss,
    gated_object_weights,
    train_base,
)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    """A diffusers folder of configs with the built-in model's layout at a fraction of the width."""
    from diffusers import UNet2DConditionModel

    d = tmp_path_factory.mktemp("tiny_cfg")
    UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=32,
    ).save_config(d / "unet")
    vae = tiny_vae()
    vae.register_to_config(sample_size=128)
    vae.save_config(d / "vae")
    _clip_config(32, 2, 4, "quick_gelu", 49407).save_pretrained(d / "text_encoder")
    shutil.copytree(str(TOKENIZER_DIR), d / "tokenizer")
    shutil.copytree(BUILTIN_CONFIG_DIR / "scheduler", d / "scheduler")
    shutil.copy(BUILTIN_CONFIG_DIR / "model_index.json", d / "model_index.json")
    return d


def _cfg(config_dir, **kw):
    base = dict(config_dir=str(config_dir), vae_steps=4, vae_batch=4, pool_size=32, batch=8, warmup=1,
                checkpoint_minutes=0.0, minutes=10, sample_every=10**9)
    return BaseTrainConfig(**(base | kw))


def test_training_lowers_the_loss(tiny_config, tmp_path):
    cfg = _cfg(tiny_config, max_steps=0, lr=2e-3)
    train_base(cfg, tmp_path / "run")  # VAE phase + pool, no UNet steps yet
    vae, unet, te, tok, sched = _load_components(cfg)
    vae.load_state_dict(torch.load(tmp_path / "run" / "vae.pt", weights_only=True)["model"])
    pool = build_pool(vae, cfg, tmp_path / "run")
    before = fixed_batch_loss(unet, te, tok, sched, pool)
    train_base(_cfg(tiny_config, max_steps=40, lr=2e-3, object_loss_weight=5.0, object_loss_max_timestep=500,
                    layout_share=0.25, grounding_weight=0.1), tmp_path / "run")
    state = torch.load(tmp_path / "run" / "unet.pt", weights_only=True)
    assert state["step"] == 40
    unet.load_state_dict(state["unet"])
    te.load_state_dict(state["te"])
    after = fixed_batch_loss(unet, te, tok, sched, pool)
    assert after < before * 0.8, (before, after)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[-1]["object_loss_max_timestep"] == 500 and history[-1]["to_step"] == 40


def test_object_weight_is_gated_off_at_noisy_timesteps():
    # two examples with an object in the top-left latent pixel, weight 5 there and 1 elsewhere
    weights = torch.ones(2, 1, 2, 2)
    weights[:, :, 0, 0] = 5.0
    t = torch.tensor([299, 300])
    gated = gated_object_weights(weights, t, 300)
    assert gated[0].flatten().tolist() == [5.0, 1.0, 1.0, 1.0]  # layout settled: the object still weighs more
    assert gated[1].flatten().tolist() == [1.0, 1.0, 1.0, 1.0]  # layout undecided: every pixel alike
    assert torch.equal(gated_object_weights(weights, t, None), weights)


def test_bad_training_settings_are_one_line_errors(tmp_path):
    import subprocess
    import sys

    from egaku.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="layout-share must be between 0 and 1, not 1.5"):
        BaseTrainConfig(layout_share=1.5)
    with pytest.raises(InvalidRequestError, match="object-loss-weight must be positive, not 0"):
        BaseTrainConfig(object_loss_weight=0)
    with pytest.raises(InvalidRequestError, match="object-loss-max-timestep must be 0 or more, not -1"):
        BaseTrainConfig(object_loss_max_timestep=-1)
    with pytest.raises(InvalidRequestError, match="grounding-weight must be 0 or more, not -1"):
        BaseTrainConfig(grounding_weight=-1)
    with pytest.raises(InvalidRequestError, match=r"count-share must be between 0 and 1 minus layout-share \(0.25\), not 0.5"):
        BaseTrainConfig(layout_share=0.75, count_share=0.5)
    with pytest.raises(InvalidRequestError, match="lr-decay-steps must be 0 or more"):
        BaseTrainConfig(lr_decay_steps=-5)
    proc = subprocess.run([sys.executable, "-m", "egaku.cli.main", "train", "base", "--out", str(tmp_path / "run"),
                           "--vae-refine-steps", "-1"], capture_output=True, text=True, timeout=300)
    assert proc.stderr.strip().splitlines()[-1] == "error: vae-steps, decoder-steps and vae-refine-steps must be 0 or more"
    proc = subprocess.run([sys.executable, "-m", "egaku.cli.main", "train", "base", "--out", str(tmp_path / "run"),
                           "--layout-share", "2"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and not (tmp_path / "run").exists()
    assert proc.stderr.strip().splitlines()[-1] == "error: layout-share must be between 0 and 1, not 2"


def test_count_share_spends_part_of_each_batch_on_counted_groups_without_positions(tiny_config):
    import random

    from egaku.train.base import batch_examples
    from egaku.world.scene import sample_scene
    from egaku.world.vocab import COUNT_EN, COUNT_JA, POSITION_EN, POSITION_JA

    cfg = _cfg(tiny_config, batch=8, layout_share=0.25, count_share=0.5, uncond_prob=0.0)
    tok = _load_components(cfg)[3]
    rng = random.Random(0)
    scenes = [sample_scene(rng) for _ in range(300)]
    groups = [i for i, s in enumerate(scenes) if s.group]
    position_words = [w for ws in POSITION_EN.values() for w in ws] + list(POSITION_JA.values())
    for _ in range(10):
        idx, captions, n_noisy = batch_examples(scenes, groups, rng, tok, cfg)
        assert len(idx) == 8 and n_noisy == 6  # 2 layout + 4 counting examples take noisier timesteps
        for k, (i, (text, spans)) in enumerate(zip(idx, captions)):
            if k < 2:  # layout: positions always named
                assert any(w in text for w in position_words), text
            elif k < 6:  # counting: a group, counted, and no position
                n = len(scenes[i].objects)
                assert scenes[i].group and (COUNT_EN[n] in text or COUNT_JA[n] in text), text
                assert not any(w in text for w in position_words), text
                assert spans and spans[0][2] == tuple(range(n))  # the group is one grounded phrase
    # with no counting scene in the pool, the batch is all layout and ordinary examples
    idx, _, n_noisy = batch_examples(scenes, [], rng, tok, cfg)
    assert n_noisy == 2


def test_learning_rate_warms_up_holds_then_decays_on_a_cosine():
    from egaku.train.base import learning_rate

    cfg = BaseTrainConfig(lr=1e-3, warmup=10, lr_decay_start=100, lr_decay_steps=50, lr_final_ratio=0.1)
    assert learning_rate(cfg, 4) == pytest.approx(5e-4)
    assert learning_rate(cfg, 99) == pytest.approx(1e-3)
    assert learning_rate(cfg, 125) == pytest.approx(5.5e-4)  # halfway: the mean of lr and its floor
    assert learning_rate(cfg, 150) == pytest.approx(1e-4) == learning_rate(cfg, 10_000)
    assert learning_rate(BaseTrainConfig(lr=1e-3, warmup=10), 10_000) == 1e-3  # no decay unless asked


def test_object_masks_cover_the_drawn_objects_in_latent_cells():
    import random

    from egaku.train.base import latent_object_masks
    from egaku.world.render import render
    from egaku.world.scene import background_rgb, sample_scene

    rng = random.Random(3)
    scenes = [sample_scene(rng) for _ in range(40)]
    masks = latent_object_masks(scenes, 16)  # (40, 1, 16, 16)
    for scene, mask in zip(scenes, masks):
        diff = torch.from_numpy(abs(render(scene).astype(int) - background_rgb(scene)).sum(-1))  # (128, 128)

        def cells(drawn):  # (16, 16): latent cells (8x8 pixel patches) with any such pixel
            return drawn.reshape(16, 8, 16, 8).any(3).any(1)

        # every cell with a clearly painted pixel is weighted; no cell without any painted pixel is
        assert not (cells(diff > 60) & ~mask[0].bool()).any() and not (mask[0].bool() & ~cells(diff > 0)).any()


def test_interrupted_training_resumes_to_the_same_weights(tiny_config, tmp_path):
    recipe = dict(count_share=0.25, layout_share=0.25, lr_decay_start=2, lr_decay_steps=3)  # every batch part, a decay
    train_base(_cfg(tiny_config, max_steps=6, **recipe), tmp_path / "straight")
    train_base(_cfg(tiny_config, max_steps=3, **recipe), tmp_path / "resumed")
    train_base(_cfg(tiny_config, max_steps=6, **recipe), tmp_path / "resumed")
    a = torch.load(tmp_path / "straight" / "unet.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "unet.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for k in a["unet"]:
        assert torch.equal(a["unet"][k], b["unet"][k]), k
    for k in a["ema"]["unet"]:
        assert torch.equal(a["ema"]["unet"][k], b["ema"]["unet"][k]), k
    history = json.loads((tmp_path / "resumed" / "history.json").read_text())
    assert [(h["from_step"], h["to_step"]) for h in history] == [(0, 3), (3, 6)]


def test_export_writes_a_loadable_fp16_model(tiny_config, tmp_path):
    from egaku.models import load_model

    out = tmp_path / "model"
    result = train_base(_cfg(tiny_config, max_steps=2), tmp_path / "run", export_to=out)
    assert result["unet_steps"] == 2
    bundle = load_model(str(out))
    assert bundle.unet.config.cross_attention_dim == 32
    assert bundle.vae.config.scaling_factor == pytest.approx(result["scaling_factor"])
    info = json.loads((out / "TRAINING.json").read_text())
    assert info["unet_steps"] == 2
    assert [(h["from_step"], h["to_step"]) for h in info["history"]] == [(0, 2)]


def test_a_new_run_can_start_from_an_exported_model(tiny_config, tmp_path):
    from safetensors.torch import load_file

    def same(x, y, part: str) -> bool:
        a, b = (load_file(next((m / part).glob("*.safetensors"))) for m in (x, y))
        return all(torch.equal(a[k], b[k]) for k in a)

    first = tmp_path / "first"
    train_base(_cfg(tiny_config, max_steps=3), tmp_path / "run1", export_to=first)
    cfg = _cfg(tiny_config, max_steps=0, init_from=str(first))
    train_base(cfg, tmp_path / "run2", export_to=tmp_path / "second")
    # no steps taken: the starting weights come back
    assert same(first, tmp_path / "second", "unet") and same(first, tmp_path / "second", "text_encoder")
    assert same(first, tmp_path / "second", "vae")
    # a run stopped after the VAE counted as done but before the UNet's first checkpoint resumes
    # from the exported model again, not from random weights
    (tmp_path / "run2" / "unet.pt").unlink()
    train_base(cfg, tmp_path / "run2", export_to=tmp_path / "third")
    assert same(first, tmp_path / "third", "unet") and same(first, tmp_path / "third", "text_encoder")


def test_decoder_fine_tune_moves_only_the_decoder(tiny_config, tmp_path):
    """`--decoder-steps`: only the decoder moves, so latents (and a UNet trained on them) stay valid.
    (Whether it helps is measured on the real model: docs/builtin-model.md, v2.)"""
    run = tmp_path / "run"
    train_base(_cfg(tiny_config, max_steps=0), run)
    vae, *_ = _load_components(_cfg(tiny_config))
    vae.load_state_dict(torch.load(run / "vae.pt", weights_only=True)["model"])
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    pool_before = torch.load(run / "pool.pt", weights_only=True)["latents"]
    train_base(_cfg(tiny_config, decoder_steps=3, max_steps=0), run)
    state = torch.load(run / "decoder.pt", weights_only=True)
    assert state["step"] == 3 and state["done"]
    assert state["decoder"].keys() == {k for k in before if k.startswith(("decoder.", "post_quant_conv."))}
    assert any(not torch.equal(v, before[k]) for k, v in state["decoder"].items())
    vae.load_state_dict(state["decoder"], strict=False)
    for k, v in vae.state_dict().items():  # the encoder side is bit-identical
        if not k.startswith(("decoder.", "post_quant_conv.")):
            assert torch.equal(v, before[k]), k
    assert torch.equal(torch.load(run / "pool.pt", weights_only=True)["latents"], pool_before)  # pool kept


def _pool_drift(run, before) -> float:
    after = torch.load(run / "pool.pt", weights_only=True)["latents"].float()
    return float((after - before).norm() / before.norm())


def test_vae_refine_moves_the_encoder_within_its_anchor_and_re_encodes_the_pool(tiny_config, tmp_path, monkeypatch):
    """`--vae-refine-steps`: the whole VAE trains on, the pool is re-encoded with the new encoder,
    and the latent anchor keeps the latents nearer where they were than the same steps without it.
    A refine interrupted and resumed ends on the same weights."""
    import egaku.train.vae as vae_phases

    first = tmp_path / "first"
    train_base(_cfg(tiny_config, max_steps=0), first)
    pool_before = torch.load(first / "pool.pt", weights_only=True)["latents"].float()
    drift = {}
    for weight in (0.0, 50.0):
        run = tmp_path / f"anchor{weight:g}"
        shutil.copytree(first, run)
        monkeypatch.setattr(vae_phases, "REFINE_ANCHOR_WEIGHT", weight)
        train_base(_cfg(tiny_config, vae_refine_steps=12, max_steps=0, decoder_lr=2e-3), run)
        state = torch.load(run / "refine.pt", weights_only=True)
        assert state["step"] == 12 and state["done"]
        assert torch.load(run / "pool.pt", weights_only=True)["encoder"] == [4, 12]
        drift[weight] = _pool_drift(run, pool_before)
    assert 0 < drift[50.0] < drift[0.0], drift

    resumed = tmp_path / "resumed"
    shutil.copytree(first, resumed)
    train_base(_cfg(tiny_config, vae_refine_steps=5, max_steps=0, decoder_lr=2e-3), resumed)
    train_base(_cfg(tiny_config, vae_refine_steps=12, max_steps=0, decoder_lr=2e-3), resumed)
    a = torch.load(resumed / "refine.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "anchor50" / "refine.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
