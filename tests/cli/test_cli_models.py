"""`egaku models ...` and the model errors of `egaku generate` (unknown, missing, corrupt)."""

import json

import pytest


def test_models_add_list_info_remove(egaku, egaku_here, one_line_error, tiny_sd1_dir):
    added = egaku("models", "add", tiny_sd1_dir, "--name", "tiny", "--json")
    assert added.returncode == 0, added.stderr
    info = json.loads(added.stdout)
    assert (info["name"], info["family"], info["inpaint"]) == ("tiny", "sd1", False)
    assert len(info["sha256"]) == 64 and info["autov2"] == info["sha256"][:10]

    # The console script works (above); the rest runs main() in-process to save torch imports.
    egaku = egaku_here
    listed = egaku("models", "list")
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[0].split() == ["NAME", "FAMILY", "FORMAT", "HASH", "SIZE"]
    assert listed.stdout.splitlines()[1].split()[:2] == ["tiny", "sd1"]
    assert f"hash (AutoV2):   {info['autov2']}" in egaku("models", "info", "tiny").stdout

    assert egaku("models", "remove", "tiny").stdout == "removed tiny\n"
    one_line_error(egaku("models", "info", "tiny"), "tiny")
    assert json.loads(egaku("models", "list", "--json").stdout) == []


@pytest.fixture
def bad_models(tmp_path):
    from safetensors.torch import save_file
    import torch

    (tmp_path / "garbage.safetensors").write_bytes(b"\x00\x01not a model" * 10)
    whole = tmp_path / "whole.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3)}, whole)
    (tmp_path / "truncated.safetensors").write_bytes(whole.read_bytes()[:300])
    return tmp_path


@pytest.mark.parametrize(
    ("model", "fragments"),
    [
        ("no-such-model", ["no-such-model"]),
        ("missing/model.safetensors", ["model.safetensors"]),
        ("garbage.safetensors", ["garbage.safetensors"]),
        ("truncated.safetensors", ["truncated.safetensors"]),
    ],
)
def test_model_errors(egaku_here, one_line_error, bad_models, model, fragments):
    # In-process main() (the subprocess path of errors is covered in test_cli_errors.py).
    proc = egaku_here("generate", "a cube", "-m", model, "--steps", "2", "-W", "64", "-H", "64", "--quiet")
    one_line_error(proc, *fragments)
    assert not (bad_models / "out.png").exists()
