"""A1111 infotext: what we write, A1111 reads; what A1111 writes, we read."""

import io
from importlib.metadata import version

import pytest
from PIL import Image

from egaku.engine.images import save_png
from egaku.engine.metadata import (
    format_parameters,
    parse_parameters,
    quote,
    read_parameters,
    request_kwargs_from_parameters,
    unquote,
)
from egaku.engine.request import GenerationRequest
from egaku.errors import InvalidImageError, InvalidRequestError

# As A1111 v1.6 writes it (hires fix, a LoRA, clip skip 2), copied from a real PNG Info panel.
A1111_TEXT = (
    "masterpiece, best quality, 1girl, (smile:1.2), <lora:add_detail:0.5>\n"
    "Negative prompt: lowres, bad anatomy, (worst quality:1.4)\n"
    "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 3632981563, Size: 512x768, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.52, Clip skip: 2, "
    'Hires upscale: 2, Hires upscaler: Latent, Lora hashes: "add_detail: 7c6bad76eb54", Version: v1.6.0'
)


def test_format_matches_a1111_layout():
    request = GenerationRequest(prompt="a red cube", negative_prompt="blurry", steps=20, cfg_scale=7.0,
                                width=512, height=512)
    text = format_parameters(request, seed=123, model_name="tiny", model_hash="abcdef1234")
    prompt, negative, params = text.split("\n")
    assert prompt == "a red cube"
    assert negative == "Negative prompt: blurry"
    assert params.startswith(
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 512x512, Model hash: abcdef1234, Model: tiny, "
    )
    assert params.endswith(f", Version: egaku {version('egaku')}")
    # txt2img with clip skip 1 and no mask: these fields do not apply, so A1111 leaves them out.
    for absent in ("Denoising strength", "Clip skip", "Mask blur"):
        assert absent not in text


def test_no_negative_line_when_empty_and_img2img_fields_present():
    init = Image.new("RGB", (64, 64))
    mask = Image.new("L", (64, 64))
    request = GenerationRequest(prompt="p", width=64, height=64, init_image=init, mask=mask, strength=0.5,
                                clip_skip=2, mask_blur=6)
    text = format_parameters(request, seed=1, model_name="m", model_hash="")
    assert text.split("\n")[0] == "p"
    assert "Negative prompt" not in text
    assert "Model hash" not in text  # an empty hash is left out, not written empty
    assert "Denoising strength: 0.5, Clip skip: 2, Mask blur: 6, Version:" in text


def test_round_trip_multiline_prompt_and_quoted_values():
    request = GenerationRequest(
        prompt="line one, with comma\nline two: with colon",
        negative_prompt="ugly,\nbad hands",
        sampler="DPM++ 2M Karras",
        steps=7,
        cfg_scale=4.5,
        width=640,
        height=448,
        clip_skip=2,
    )
    extra = {"Lora hashes": "a: 0123456789, b: abcdef0123", "Note": 'has "quotes", too'}
    text = format_parameters(request, seed=42, model_name="my, model", model_hash="0123abcd45", extra=extra)
    assert 'Model: "my, model"' in text
    assert 'Lora hashes: "a: 0123456789, b: abcdef0123"' in text
    params = parse_parameters(text)
    assert params["Prompt"] == request.prompt
    assert params["Negative prompt"] == request.negative_prompt
    assert params["Lora hashes"] == extra["Lora hashes"]
    assert params["Note"] == extra["Note"]
    assert params["Model"] == "my, model"
    assert params["Version"] == f"egaku {version('egaku')}"
    kwargs = request_kwargs_from_parameters(params)
    assert kwargs == {
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "sampler": "DPM++ 2M Karras",
        "model": "my, model",
        "steps": 7,
        "cfg_scale": 4.5,
        "seed": 42,
        "width": 640,
        "height": 448,
        "clip_skip": 2,
    }
    GenerationRequest(**kwargs).validated()


def test_parse_known_a1111_infotext():
    params = parse_parameters(A1111_TEXT)
    assert params["Prompt"] == "masterpiece, best quality, 1girl, (smile:1.2), <lora:add_detail:0.5>"
    assert params["Negative prompt"] == "lowres, bad anatomy, (worst quality:1.4)"
    assert params["Steps"] == 28
    assert params["Sampler"] == "DPM++ 2M Karras"
    assert params["CFG scale"] == 7.5
    assert params["Seed"] == 3632981563
    assert (params["Size-1"], params["Size-2"]) == (512, 768)
    assert params["Model hash"] == "6ce0161689"
    assert params["Hires upscale"] == "2"
    assert params["Lora hashes"] == "add_detail: 7c6bad76eb54"
    assert params["Version"] == "v1.6.0"
    kwargs = request_kwargs_from_parameters(params)
    assert (kwargs["width"], kwargs["height"], kwargs["strength"], kwargs["clip_skip"]) == (512, 768, 0.52, 2)
    assert kwargs["model"] == "v1-5-pruned-emaonly"


def test_parse_a1111_schedule_type_and_defaults():
    # A1111 >= 1.9 writes the scheduler apart; no "Clip skip" means 1; no negative prompt line.
    text = "a cat\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 5, Size: 512x512"
    params = parse_parameters(text)
    assert params["Prompt"] == "a cat"
    assert params["Negative prompt"] == ""
    assert params["Clip skip"] == 1
    assert request_kwargs_from_parameters(params)["sampler"] == "DPM++ 2M Karras"


def test_last_line_with_fewer_than_three_pairs_is_prompt():
    params = parse_parameters("portrait\nstyle: oil, mood: calm")
    assert params["Prompt"] == "portrait\nstyle: oil, mood: calm"
    assert "Steps" not in params


def test_non_numeric_value_is_a_one_line_error():
    params = parse_parameters("x\nSteps: many, Sampler: Euler, CFG scale: 7, Seed: 1")
    with pytest.raises(InvalidRequestError, match="'Steps' is not a number: 'many'"):
        request_kwargs_from_parameters(params)


def test_quote_unquote():
    assert quote("Euler a") == "Euler a"
    assert quote("a, b") == '"a, b"'
    assert quote("日本語: テスト") == '"日本語: テスト"'
    assert unquote('"a, b"') == "a, b"
    assert unquote('"broken') == '"broken'
    assert unquote('"1"') == "1"


def test_read_parameters_from_png_including_unicode(tmp_path):
    text = "富士山, 夕焼け\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 9, Size: 64x64"
    path = save_png(Image.new("RGB", (64, 64), "red"), tmp_path / "a.png", text)
    assert read_parameters(path) == text
    plain = save_png(Image.new("RGB", (8, 8)), tmp_path / "plain.png")
    assert read_parameters(plain) is None


def test_read_parameters_from_jpeg_exif_user_comment(tmp_path):
    text = "a dog\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 9, Size: 64x64"
    exif = Image.Exif()
    # As A1111 (piexif) writes it: charset prefix then UTF-16 big-endian text.
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + text.encode("utf-16-be")
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="JPEG", exif=exif)
    path = tmp_path / "a.jpg"
    path.write_bytes(buffer.getvalue())
    assert read_parameters(path) == text


def test_read_parameters_rejects_non_images(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(InvalidImageError, match="notes.png is not a readable image"):
        read_parameters(bad)
    with pytest.raises(InvalidImageError, match="does not exist"):
        read_parameters(tmp_path / "missing.png")
