"""Token grounding (TokenCompose): the recorded attention is diffusers' own, the loss measures where
a phrase looks, and training with it moves each phrase's attention onto its object."""

import random

import pytest
import torch
import torch.nn.functional as F

from egaku.models.tiny import TOKENIZER_DIR
from egaku.train.grounding import AttentionRecorder, grounding_loss, phrase_region_masks, phrase_token_masks
from egaku.train.data import fitting_caption_with_spans
from egaku.world.captions import caption_with_spans
from egaku.world.render import object_masks
from egaku.world.scene import Scene, WorldObject


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(TOKENIZER_DIR)


def _tiny_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=32,
    )


def test_recorder_leaves_the_unet_output_unchanged_and_is_removed_after():
    unet = _tiny_unet().eval()
    x, t, cond = torch.randn(2, 4, 16, 16), torch.tensor([10, 900]), torch.randn(2, 77, 32)
    with torch.no_grad():
        plain = unet(x, t, cond).sample
        with AttentionRecorder(unet) as rec:
            recorded = unet(x, t, cond).sample
            maps = list(rec.maps)
        after = unet(x, t, cond).sample
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=1e-4)
    assert len(maps) == 4  # the cross-attention in the down block, the mid block, and two in the up block
    assert maps[0].shape == (2, unet.config.attention_head_dim, 16 * 16, 77)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 4, 256))  # probabilities over tokens
    assert all(".attn2." not in n or type(p).__name__ != "_RecordingProcessor" for n, p in unet.attn_processors.items())
    torch.testing.assert_close(after, plain)


def test_phrase_tokens_cover_the_object_words_only(tokenizer):
    scene = Scene("blue", [WorldObject("circle", "red", "left", "small"), WorldObject("star", "yellow", "right", "large")])
    text, spans = caption_with_spans(scene, "en", random.Random(0), positions=True, sizes=False, background=True)
    masks = phrase_token_masks(tokenizer, [text], [spans], 3)  # (1, 3, 77)
    ids = tokenizer(text).input_ids
    words = [[tokenizer.decode([ids[j]]).strip() for j in range(len(ids)) if masks[0, k, j]] for k in range(3)]
    assert "red" in words[0] and "circle" in words[0] and "left" in words[0] and "star" not in words[0]
    assert "yellow" in words[1] and "star" in words[1] and "blue" not in words[1]
    assert words[2] == []  # no third object
    ja, ja_spans = caption_with_spans(scene, "ja", random.Random(0), positions=True)
    ja_masks = phrase_token_masks(tokenizer, [ja], [ja_spans], 3)
    assert ja_masks[0, 0].sum() > 0 and ja_masks[0, 1].sum() > 0


def test_the_artists_name_is_grounded_on_every_object(tokenizer):
    objs = [WorldObject("circle", "red", "left", "small"), WorldObject("star", "yellow", "right", "large")]
    scene = Scene("blue", objs, "Kaito Arima")
    text, spans = fitting_caption_with_spans(scene, random.Random(1), tokenizer, "en", style=True)
    assert len(spans) == 3 and spans[-1][2] == (0, 1)
    masks = phrase_token_masks(tokenizer, [text], [spans], 4)  # (1, 4, 77)
    ids = tokenizer(text).input_ids
    named = "".join(tokenizer.decode([ids[j]]) for j in range(len(ids)) if masks[0, 2, j]).replace(" ", "")
    assert named == "kaitoarima"
    regions = phrase_region_masks([torch.from_numpy(object_masks(scene))], [spans], 4)  # (1, 4, 128, 128)
    torch.testing.assert_close(regions[0, 2], torch.maximum(regions[0, 0], regions[0, 1]))
    plain = Scene("blue", objs)
    assert len(fitting_caption_with_spans(plain, random.Random(1), tokenizer, "en", style=True)[1]) == 2


def test_loss_is_zero_inside_the_object_and_one_outside():
    regions = torch.zeros(1, 1, 16, 16)
    regions[0, 0, :8, :8] = 1  # the object fills the top-left quarter
    tokens = torch.zeros(1, 1, 77)
    tokens[0, 0, 3] = 1
    inside = torch.zeros(1, 1, 256, 77)
    inside[..., 0] = 1  # all other attention on the start token
    inside[0, 0, 0, :] = 0
    inside[0, 0, 0, 3] = 1  # pixel (0, 0) looks at the phrase
    outside = torch.zeros(1, 1, 256, 77)
    outside[..., 0] = 1
    outside[0, 0, 255, :] = 0
    outside[0, 0, 255, 3] = 1  # only pixel (15, 15) does
    assert float(grounding_loss([inside], tokens, regions)) == pytest.approx(0.0)
    assert float(grounding_loss([outside], tokens, regions)) == pytest.approx(1.0)
    uniform = torch.full((1, 1, 256, 77), 1 / 77)
    assert float(grounding_loss([uniform], tokens, regions)) == pytest.approx(0.75**2)  # a quarter inside
    assert float(grounding_loss([uniform], torch.zeros(1, 1, 77), regions)) == 0.0  # no phrase: nothing to ground


def test_training_on_the_loss_moves_attention_onto_objects(tokenizer):
    from transformers import CLIPTextModel

    from egaku.models.tiny import _clip_config

    torch.manual_seed(0)
    unet, te = _tiny_unet(), CLIPTextModel(_clip_config(32, 2, 4, "quick_gelu", 49407))
    rng = random.Random(0)
    scenes = [Scene("white", [WorldObject(rng.choice(("circle", "star")), "red", p, "large")])
              for p in rng.choices(("left", "right", "top", "bottom"), k=16)]
    captions = [caption_with_spans(s, "en", rng, positions=True) for s in scenes]
    texts, spans = [c for c, _ in captions], [s for _, s in captions]
    ids = tokenizer(texts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    tokens = phrase_token_masks(tokenizer, texts, spans, 1)
    regions = phrase_region_masks([F.adaptive_max_pool2d(torch.from_numpy(object_masks(s)), 16) for s in scenes], spans, 1)
    x, t = torch.randn(16, 4, 16, 16), torch.randint(0, 1000, (16,))
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=3e-3)

    def loss():
        with AttentionRecorder(unet) as rec:
            unet(x, t, te(ids).last_hidden_state)
            return grounding_loss(rec.maps, tokens, regions)

    with torch.no_grad():
        before = float(loss())
    for _ in range(30):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        after = float(loss())
    assert after < before * 0.5, (before, after)
