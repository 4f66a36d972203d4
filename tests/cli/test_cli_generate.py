"""`egaku generate` end to end with a tiny SD 1.x model on disk: files, metadata, naming, replay."""

import json

import numpy as np
import torch
from PIL import Image

from egaku.cli.generate import output_paths


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))  # (H, W, 3)


def test_generate_batch_then_info_then_replay(egaku, egaku_here, tiny_sd1_dir, tmp_path):
    # 1. two batches of one image: out-0001.png (seed 5) and out-0002.png (seed 6)
    proc = egaku("generate", "a red cube, on a table", "-n", "blurry", "-m", tiny_sd1_dir, "--steps", "2",
                 "--seed", "5", "--batch-count", "2", "-W", "128", "-H", "64", "--sampler", "euler", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["out-0001.png  seed 5", "out-0002.png  seed 6"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".png") == ["out-0001.png", "out-0002.png"]
    with Image.open(tmp_path / "out-0002.png") as im:
        assert (im.format, im.size) == ("PNG", (128, 64))
        stored = im.info["parameters"]
    assert stored.splitlines()[:2] == ["a red cube, on a table", "Negative prompt: blurry"]
    assert "Steps: 2, Sampler: Euler, CFG scale: 7, Seed: 6, Size: 128x64" in stored

    # 2. `egaku info` shows exactly what is stored
    info = egaku("info", "out-0002.png")
    assert (info.returncode, info.stdout) == (0, stored + "\n")
    assert json.loads(egaku("info", "out-0002.png", "--json").stdout)["Seed"] == 6

    # 3. --from replays the stored parameters (seed 6) to the same pixels; progress bar on stderr.
    # In-process: the console script is proven above; this saves a second torch import.
    # Identical pixels need the same device, dtype *and* thread count (float sums are ordered by
    # the threads): the subprocess above ran with OMP_NUM_THREADS=1.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        replay = egaku_here("generate", "--from", "out-0002.png", "-m", tiny_sd1_dir, "-o", "replay.png")
    finally:
        torch.set_num_threads(threads)
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout == "replay.png  seed 6\n"
    assert "2/2" in replay.stderr and "Traceback" not in replay.stderr
    assert np.array_equal(pixels(tmp_path / "replay.png"), pixels(tmp_path / "out-0002.png"))
    with Image.open(tmp_path / "replay.png") as im:
        assert im.info["parameters"] == stored
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_output_names():
    assert output_paths("out.png", [7]) == [output_paths("out.png", [7])[0]]
    assert [p.as_posix() for p in output_paths("out.png", [7])] == ["out.png"]
    assert [p.as_posix() for p in output_paths("a/out.png", [1, 2])] == ["a/out-0001.png", "a/out-0002.png"]
    assert [p.as_posix() for p in output_paths("img_{i:02d}.png", [3, 4])] == ["img_01.png", "img_02.png"]
    assert [p.as_posix() for p in output_paths("s{seed}.png", [3, 4])] == ["s3.png", "s4.png"]
    assert [p.as_posix() for p in output_paths("one-{seed}.png", [9])] == ["one-9.png"]


def test_img2img_size_follows_the_init_image():
    from egaku.cli.generate import fit_size

    assert fit_size(640, 480) == (640, 480)
    assert fit_size(333, 250) == (328, 248)  # multiples of 8
    assert fit_size(4000, 3000) == (2048, 1536)  # within 2048 per side and 2048*2048 pixels
    assert fit_size(20, 10) == (64, 64)
