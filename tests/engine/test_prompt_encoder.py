"""Weighted, chunked CLIP conditioning on tiny SD1/SD2/SDXL models, checked against the encoders
run by hand on the token ids A1111 would build."""

import copy

import pytest
import torch

from egaku.engine.prompts import (
    PromptEncoder,
    conditioning_at,
    describe_prompt,
    match_length,
    parse_prompt_attention,
    split_into_chunks,
)
from egaku.engine.extras import add_placeholder_tokens
from egaku.engine.prompts.chunks import chunk_input_ids, placeholders
from egaku.errors import InvalidRequestError
from egaku.models.tiny import tiny_bundle

BOS, EOS, COMMA = 49406, 49407, 267


@pytest.fixture(scope="module")
def bundles():
    return {family: tiny_bundle(family) for family in ("sd1", "sd2", "sdxl")}


@pytest.fixture(scope="module")
def sd1(bundles):
    return bundles["sd1"]


def padded_ids(tokenizer, text):
    """What a plain (unweighted, single-chunk) pipeline feeds CLIP, built by the tokenizer itself."""
    return tokenizer(text, padding="max_length", max_length=77, return_tensors="pt").input_ids  # (1, 77)


@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_unweighted_prompt_equals_plain_encoder_output(bundles, family):
    b = bundles[family]
    with torch.no_grad():
        expected = b.text_encoder(padded_ids(b.tokenizer, "a photo of a cat")).last_hidden_state  # (1, 77, 32)
    cond = PromptEncoder(b).encode("a photo of a cat")
    assert cond.embeds.shape == (1, 77, 32)
    assert cond.pooled is None
    torch.testing.assert_close(cond.embeds, expected)


def test_padding_ids_follow_each_tokenizer(bundles):
    chunk = split_into_chunks(parse_prompt_attention("a cat"), bundles["sd1"].tokenizer)[0]
    assert chunk.tokens == [320, 2368]
    assert chunk_input_ids(chunk, bundles["sd1"].tokenizer) == [BOS, 320, 2368, EOS] + [EOS] * 73
    assert chunk_input_ids(chunk, bundles["sd2"].tokenizer) == [BOS, 320, 2368, EOS] + [0] * 73
    assert chunk_input_ids(chunk, bundles["sdxl"].tokenizer_2) == [BOS, 320, 2368, EOS] + [0] * 73


def test_long_prompt_splits_at_the_last_comma(sd1):
    # 70 words, a comma, 30 more: the first chunk ends at the comma (71 tokens), not mid-phrase.
    text = "cat " * 70 + ", " + "dog " * 30
    chunks = split_into_chunks(parse_prompt_attention(text), sd1.tokenizer)
    assert [len(c.tokens) for c in chunks] == [71, 30]
    assert chunks[0].tokens[-1] == COMMA
    cond = PromptEncoder(sd1).encode(text)
    assert cond.embeds.shape == (1, 154, 32)
    with torch.no_grad():
        first = sd1.text_encoder(torch.tensor([[BOS] + [2368] * 70 + [COMMA, EOS] + [EOS] * 4])).last_hidden_state
    torch.testing.assert_close(cond.embeds[:, :77], first)


def test_long_prompt_without_nearby_comma_splits_hard(sd1):
    text = "cat, " + "dog " * 99  # the only comma is 74 tokens back: too far to backtrack
    chunks = split_into_chunks(parse_prompt_attention(text), sd1.tokenizer)
    assert [len(c.tokens) for c in chunks] == [75, 26]
    assert PromptEncoder(sd1).encode(text).embeds.shape == (1, 154, 32)


def test_an_embedding_is_never_split_between_chunks(sd1):
    tok = copy.deepcopy(sd1.tokenizer)
    emb = add_placeholder_tokens(tok, placeholders("ink", 4))
    words = " ".join(placeholders("ink", 4))
    # 73 words leave room for 2 of its 4 vectors: the chunk closes early and the embedding starts the next
    chunks = split_into_chunks(parse_prompt_attention("cat " * 73 + words + " dog"), tok)
    assert [len(c.tokens) for c in chunks] == [73, 5]
    assert chunks[1].tokens == emb + [tok.convert_tokens_to_ids("dog</w>")]
    # where it fits, it stays; a weight applies to all its vectors
    chunks = split_into_chunks(parse_prompt_attention("cat " * 71 + f"({words}:1.2) dog"), tok)
    assert [len(c.tokens) for c in chunks] == [75, 1]
    assert chunks[0].tokens[71:] == emb and chunks[0].weights[71:] == [1.2] * 4


def test_break_starts_a_new_chunk(sd1):
    enc = PromptEncoder(sd1)
    cond = enc.encode("a cat BREAK a dog")
    assert cond.embeds.shape == (1, 154, 32)
    assert cond.chunk_count == 2
    torch.testing.assert_close(cond.embeds[:, :77], enc.encode("a cat").embeds)
    torch.testing.assert_close(cond.embeds[:, 77:], enc.encode("a dog").embeds)


def test_weight_scales_the_token_then_restores_the_mean(sd1):
    enc = PromptEncoder(sd1)
    plain = enc.encode("a cat sat").embeds[0]  # (77, 32); ids: BOS a cat sat EOS pad...
    weighted = enc.encode("a (cat:1.5) sat").embeds[0]  # (77, 32)
    w = torch.ones(77, 1)
    w[2] = 1.5  # position of "cat"
    expected = plain * w * (plain.mean() / (plain * w).mean())
    torch.testing.assert_close(weighted, expected)
    assert weighted.mean().item() == pytest.approx(plain.mean().item(), abs=1e-6)
    # Relative to the other tokens, "cat" is exactly 1.5 times what it was.
    ratio = (weighted / plain)[:, 0]
    assert ratio[2].item() == pytest.approx(1.5 * ratio[1].item(), rel=1e-5)
    assert torch.allclose(ratio[[0, 1, 3, 4]], ratio[1].expand(4))


def test_clip_skip_2_is_the_normed_penultimate_layer(sd1):
    ids = padded_ids(sd1.tokenizer, "a cat")
    with torch.no_grad():
        hidden = sd1.text_encoder(ids, output_hidden_states=True).hidden_states[-2]  # (1, 77, 32)
        expected = sd1.text_encoder.final_layer_norm(hidden)
    cond = PromptEncoder(sd1).encode("a cat", clip_skip=2)
    torch.testing.assert_close(cond.embeds, expected)
    assert not torch.allclose(cond.embeds, PromptEncoder(sd1).encode("a cat").embeds)


def test_clip_skip_beyond_the_encoder_is_a_user_error(sd1):
    with pytest.raises(InvalidRequestError, match="clip skip 3 is out of range: this text encoder has 2 layers"):
        PromptEncoder(sd1).encode("a cat", clip_skip=3)


def test_sdxl_concatenates_both_penultimate_layers_and_pools_the_second(bundles):
    b = bundles["sdxl"]
    cond = PromptEncoder(b).encode("a cat")
    assert cond.embeds.shape == (1, 77, 64)
    assert cond.pooled.shape == (1, 32)
    with torch.no_grad():
        h1 = b.text_encoder(padded_ids(b.tokenizer, "a cat"), output_hidden_states=True).hidden_states[-2]
        out2 = b.text_encoder_2(padded_ids(b.tokenizer_2, "a cat"), output_hidden_states=True)
    torch.testing.assert_close(cond.embeds, torch.cat([h1, out2.hidden_states[-2]], dim=-1))
    torch.testing.assert_close(cond.pooled, out2.text_embeds)
    # As in A1111 and ComfyUI, clip skip 2 on SDXL is its default penultimate layer.
    torch.testing.assert_close(PromptEncoder(b).encode("a cat", clip_skip=2).embeds, cond.embeds)


def test_sdxl_long_prompt_pools_the_first_chunk(bundles):
    b = bundles["sdxl"]
    enc = PromptEncoder(b)
    cond = enc.encode("a cat BREAK a dog")
    assert cond.embeds.shape == (1, 154, 64)
    torch.testing.assert_close(cond.pooled, enc.encode("a cat").pooled)


def test_empty_prompt_is_one_chunk(sd1):
    enc = PromptEncoder(sd1)
    with torch.no_grad():
        expected = sd1.text_encoder(padded_ids(sd1.tokenizer, "")).last_hidden_state
    torch.testing.assert_close(enc.empty().embeds, expected)
    assert enc.empty() is enc.empty()


def test_match_length_pads_the_shorter_with_empty_chunks(sd1):
    enc = PromptEncoder(sd1)
    long, short, empty = enc.encode("a cat BREAK a dog BREAK sun"), enc.encode("blurry"), enc.empty()
    a, b = match_length(long, short, empty)
    assert a is long
    assert b.embeds.shape == (1, 231, 32)
    torch.testing.assert_close(b.embeds[:, :77], short.embeds)
    torch.testing.assert_close(b.embeds[:, 77:154], empty.embeds)
    torch.testing.assert_close(b.embeds[:, 154:], empty.embeds)
    a2, b2 = match_length(short, long, empty)
    assert a2.embeds.shape == (1, 231, 32) and b2 is long
    a3, b3 = match_length(short, short, empty)
    assert a3 is short and b3 is short


def test_encode_schedule_switches_prompt_halfway(sd1):
    enc = PromptEncoder(sd1)
    schedule = enc.encode_schedule("a [cat:dog:0.5] <lora:style:0.7>", steps=10)
    assert [end for end, _ in schedule] == [5, 10]
    (_, first), (_, second) = schedule
    assert not torch.allclose(first.embeds, second.embeds)
    torch.testing.assert_close(first.embeds, enc.encode("a cat ").embeds)  # the LoRA tag is gone
    assert [conditioning_at(schedule, s) is first for s in range(10)] == [True] * 5 + [False] * 5
    assert conditioning_at(schedule, 99) is second


def test_alternation_encodes_each_prompt_once(sd1):
    schedule = PromptEncoder(sd1).encode_schedule("a [cat|dog]", steps=4)
    conds = [c for _, c in schedule]
    assert [end for end, _ in schedule] == [1, 2, 3, 4]
    assert conds[0] is conds[2] and conds[1] is conds[3] and conds[0] is not conds[1]


def test_describe_prompt_lists_weights_per_token(sd1):
    info = describe_prompt("a (cat:1.2), [dog] <lora:grain:0.5>", 10, sd1.tokenizer)
    assert info["max_tokens_per_chunk"] == 75
    assert info["loras"] == [{"name": "grain", "weight": 0.5}]
    (entry,) = info["schedule"]
    assert entry["until_step"] == 10
    assert entry["token_count"] == 4
    (chunk,) = entry["chunks"]
    assert chunk["tokens"] == ["a</w>", "cat</w>", ",</w>", "dog</w>"]
    assert chunk["weights"] == [1.0, 1.2, 1.0, 0.9091]
    assert chunk["count"] == 4
    assert entry["fragments"][1] == ["cat", 1.2]


def test_describe_prompt_shows_each_scheduled_prompt(sd1):
    info = describe_prompt("cat " * 80 + "[red:blue:3]", 6, sd1.tokenizer)
    assert [(e["until_step"], e["prompt"][-4:]) for e in info["schedule"]] == [(3, " red"), (6, "blue")]
    assert [c["count"] for c in info["schedule"][0]["chunks"]] == [75, 6]
