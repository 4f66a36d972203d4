"""CLI tests run the real console script in a subprocess, offline, with EGAKU_HOME in a temp folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_sd1_dir(tmp_path_factory) -> Path:
    """A tiny random-weight SD 1.x model saved as a diffusers folder (model_index.json + components)."""
    from egaku.models.tiny import tiny_bundle

    folder = tmp_path_factory.mktemp("models") / "tiny-sd1"
    bundle = tiny_bundle("sd1")
    bundle.unet.save_pretrained(folder / "unet")
    bundle.vae.save_pretrained(folder / "vae")
    bundle.text_encoder.save_pretrained(folder / "text_encoder")
    bundle.tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(bundle.scheduler_config))
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", bundle.scheduler_config["_class_name"]],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


@pytest.fixture
def egaku(tmp_path, egaku_home):
    """Run `egaku ARGS...` in tmp_path (so outputs land there); returns the CompletedProcess."""
    # generous: a loaded CI machine can take minutes to import torch and diffusers in a subprocess

    def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        env = dict(os.environ, EGAKU_HOME=str(egaku_home), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
        env.pop("EGAKU_DEBUG", None)
        return subprocess.run(
            [sys.executable, "-m", "egaku.cli.main", *map(str, args)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout,
        )

    return run


@pytest.fixture
def egaku_here(tmp_path, monkeypatch, capfd):
    """Run `egaku ARGS...` in this process (same main(), same output): for steps after a first
    subprocess run has shown the console script works, to save a torch/diffusers import (~10 s)."""
    from egaku.cli.main import main

    monkeypatch.chdir(tmp_path)
    for name in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS"):
        monkeypatch.setenv(name, os.environ.get(name, "error"))  # main() may set them; restored after

    def run(*args: str) -> subprocess.CompletedProcess:
        capfd.readouterr()
        code = main([str(a) for a in args])
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """A user error: exit 1, one `error: ...` line on stderr naming the problem, no traceback."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def one_line_error():
    return assert_one_line_error
