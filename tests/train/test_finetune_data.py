"""Training data and settings: captions from every source, aspect buckets, bad inputs reported or
refused in one line, config files, the `egaku train lora|...` command, shapes-world concepts."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from egaku.errors import InvalidRequestError
from egaku.train.finetune import build_config, read_config_file
from egaku.train.finetune.dataset import BatchOrder, assign_buckets, example_pixels, make_buckets, nearest_bucket, scan_folder


def save(folder, name, size=(64, 64), color=(200, 20, 20), **png):
    from PIL.PngImagePlugin import PngInfo

    info = None
    if png:
        info = PngInfo()
        for k, v in png.items():
            info.add_text(k, v)
    Image.new("RGB", size, color).save(folder / name, pnginfo=info)


def test_captions_from_every_source_and_bad_files_reported(tmp_path):
    save(tmp_path, "a.png")
    (tmp_path / "a.txt").write_text("  a red   square \n")
    save(tmp_path, "b.jpg")
    save(tmp_path, "c.png", parameters="a blue circle\nNegative prompt: ugly\nSteps: 20, Seed: 1")  # made by egaku
    save(tmp_path, "d.webp")  # no caption anywhere: the default caption
    (tmp_path / "sub").mkdir()
    save(tmp_path / "sub", "e.png")
    (tmp_path / "captions.jsonl").write_text('{"file": "b.jpg", "text": "a green star"}\n{"file": "sub/e.png", "text": "e"}\n'
                                             'not json\n{"file": "gone.png", "text": "x"}\n')
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    save(tmp_path, "latin.png")
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9")
    lines = []
    ds = scan_folder(tmp_path, default_caption="a thing", report=lines.append)
    assert {e.path: e.caption for e in ds.examples} == {
        "a.png": "a red square", "b.jpg": "a green star", "c.png": "a blue circle", "d.webp": "a thing", "sub/e.png": "e"}
    assert sorted(f for f, _ in ds.skipped) == ["broken.png", "gone.png", "latin.png"]
    assert len(lines) == 4 and all(line.startswith("skipped ") and "\n" not in line for line in lines)
    assert "skipped captions.jsonl line 3:" in lines[0]


def test_empty_or_missing_data_is_a_one_line_error(tmp_path):
    with pytest.raises(InvalidRequestError, match="no training images in"):
        scan_folder(tmp_path, report=lambda s: None)
    (tmp_path / "x.png").write_bytes(b"junk")
    with pytest.raises(InvalidRequestError, match=r"\(1 unreadable, skipped\)"):
        scan_folder(tmp_path, report=lambda s: None)
    with pytest.raises(InvalidRequestError, match="does not exist"):
        scan_folder(tmp_path / "nope", report=lambda s: None)


def test_aspect_buckets(tmp_path):
    buckets = make_buckets(512, 64)
    assert buckets == [(384, 640), (448, 576), (512, 512), (576, 448), (640, 384)]
    assert all(w % 64 == 0 and h % 64 == 0 and max(w / h, h / w) <= 2 and w * h <= 512 * 512 for w, h in buckets)
    assert nearest_bucket((1920, 1080), buckets) == (640, 384)
    assert all(w % 8 == 0 and h % 8 == 0 for w, h in make_buckets(128, 8))  # the built-in model's 128 px
    save(tmp_path, "wide.png", size=(300, 100), color=(10, 200, 10))
    save(tmp_path, "tall.png", size=(50, 120))
    ds = scan_folder(tmp_path, report=lambda s: None)
    assign_buckets(ds, 64, 8)
    for e in ds.examples:
        x = example_pixels(ds, e)
        assert x.shape == (3, e.bucket[1], e.bucket[0]) and -1.0 <= float(x.min()) <= float(x.max()) <= 1.0
    assert {e.path: e.bucket for e in ds.examples} == {"tall.png": (48, 80), "wide.png": (80, 48)}  # the widest, 5:3


def test_batch_order_is_one_bucket_per_batch_and_resumable(tmp_path):
    for i, size in enumerate([(64, 64)] * 5 + [(128, 64)] * 3):
        save(tmp_path, f"{i}.png", size=size)
    ds = scan_folder(tmp_path, report=lambda s: None)
    assign_buckets(ds, 64, 8)
    order = BatchOrder(ds, 2, seed=3)
    first = [order.next() for _ in range(9)]
    assert all(len({ds.examples[i].bucket for i in batch}) == 1 for batch in first)
    assert sorted(i for batch in first[:5] for i in batch) == list(range(8))  # an epoch sees every image once
    again = BatchOrder(ds, 2, seed=3)
    again.load_state({"epoch": 0, "position": 4})
    assert [again.next() for _ in range(5)] == first[4:]


def test_settings_precedence_and_errors(tmp_path):
    (tmp_path / "lora.toml").write_text('steps = 50\nrank = 16\nlr-scheduler = "cosine"\nsample-prompts = ["a zqx"]\n')
    cfg = build_config("lora", read_config_file(tmp_path / "lora.toml"), {"rank": 4, "data": "x", "alpha": None})
    assert (cfg.steps, cfg.rank, cfg.lr, cfg.lr_scheduler, cfg.sample_prompts) == (50, 4, 1e-4, "cosine", ["a zqx"])
    assert build_config("embedding", overrides={"data": "x"}).weight_decay == 0.0
    (tmp_path / "bad.json").write_text('{"stpes": 5}')
    with pytest.raises(InvalidRequestError, match="unknown setting stpes in"):
        build_config("lora", read_config_file(tmp_path / "bad.json"), {"data": "x"})
    (tmp_path / "typed.json").write_text('{"rank": "big"}')
    with pytest.raises(InvalidRequestError, match="'rank' .* wrong type"):
        build_config("lora", read_config_file(tmp_path / "typed.json"), {"data": "x"})
    (tmp_path / "broken.toml").write_text("steps = \n")
    with pytest.raises(InvalidRequestError, match="not valid TOML"):
        read_config_file(tmp_path / "broken.toml")
    for overrides, message in [({}, "exactly one source"), ({"data": "x", "from_world": "red star"}, "exactly one source"),
                               ({"data": "x", "lr": -1.0}, "lr must be a positive"), ({"data": "x", "rank": 0}, "rank must be"),
                               ({"data": "x", "mixed_precision": "fp8"}, "mixed-precision must be one of")]:
        with pytest.raises(InvalidRequestError, match=message):
            build_config("lora", overrides=overrides)


def test_cli_bad_data_is_one_line(tmp_path, egaku_home):
    env = dict(os.environ, EGAKU_HOME=str(egaku_home), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, "-m", "egaku.cli.main", "train", "lora", str(tmp_path / "empty"), "--out",
                           str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: no training images in {tmp_path / 'empty'}")


def test_cli_trains_and_adds_to_the_library(tiny_data, tiny_model_file, tmp_path, egaku_home, capfd, monkeypatch):
    from egaku.cli.main import main
    from egaku.models.library_extras import list_extras

    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.toml").write_text('steps = 3\nrank = 2\nsample-steps = 2\neval-examples = 1\n')
    code = main(["train", "lora", str(tiny_data), "--base", str(tiny_model_file("sd1")), "--out", "runs/zqx",
                 "--config", "cfg.toml", "--lr", "0.001", "--trigger-words", "zqx", "--add"])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert "skipped broken.png: broken.png is not an image" in err and "added to the library as zqx" in err
    assert out.strip() == "runs/zqx/zqx.safetensors"  # stdout: the result, for scripts
    saved = json.loads((tmp_path / "runs" / "zqx" / "config.json").read_text())
    assert (saved["steps"], saved["rank"], saved["lr"], saved["trigger_words"]) == (3, 2, 0.001, ["zqx"])
    [info] = list_extras("lora")
    assert (info.name, info.rank, info.trigger_words) == ("zqx", 2, ["zqx"])


def test_world_concept_dataset(tmp_path):
    from egaku.train.finetune.world_concept import concept_prompts, make_world_dataset, parse_concept, shows_concept
    from egaku.world.analyze import analyze

    assert parse_concept("Green  HEART") == parse_concept("heart green")
    assert parse_concept("stripes star").artist == "Mira Fenn"
    with pytest.raises(InvalidRequestError, match="cannot read world concept"):
        parse_concept("a purple unicorn")
    folder = make_world_dataset("green heart", 6, tmp_path / "d", seed=1)
    captions = [(folder / f"{i:03d}.txt").read_text().strip() for i in range(6)]
    assert all("heart" in c and "background" in c for c in captions)
    concept = parse_concept("green heart")
    assert all(shows_concept(analyze(Image.open(folder / f"{i:03d}.png").convert("RGB")), concept) for i in range(6))
    assert all("zqx" in p and "heart" not in p for p in concept_prompts("green heart", 3, token="zqx"))
    image = np.asarray(Image.open(folder / "000.png"))
    assert image.shape == (128, 128, 3)
