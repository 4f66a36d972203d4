"""The local library: add, list, info, remove, export, duplicates and hashes."""

import hashlib
import json

import pytest
import torch

from egaku.errors import InvalidRequestError, ModelLoadError, ModelNotFoundError
from egaku.models import library, load_model
from egaku.models.export import export_single_file
from egaku.models.hashing import index_path, sha256_path, weight_files
from egaku.models.tiny import tiny_bundle


@pytest.fixture(scope="module")
def sdxl_bundle():
    return tiny_bundle("sdxl")


@pytest.fixture
def sdxl_file(sdxl_bundle, tmp_path):
    return export_single_file(sdxl_bundle, tmp_path / "my-xl.safetensors")


def test_add_list_info_remove(sdxl_file, egaku_home):
    added = library.add(sdxl_file)
    digest = hashlib.sha256(sdxl_file.read_bytes()).hexdigest()
    assert added.name == "my-xl" and added.sha256 == digest and added.autov2 == digest[:10]
    assert (added.family, added.inpaint, added.prediction_type, added.format) == ("sdxl", False, "epsilon", "safetensors")
    assert added.default_size == 64 and added.size_bytes == sdxl_file.stat().st_size
    assert added.path == str(egaku_home / "models" / "my-xl.safetensors")
    assert [m.name for m in library.list_models()] == ["my-xl"]
    assert library.info("my-xl") == added
    assert library.resolve("my-xl") == egaku_home / "models" / "my-xl.safetensors"
    assert load_model("my-xl").sha256 == digest

    again = library.add(sdxl_file, name="copy")  # same bytes: the existing entry, no second copy
    assert again.name == "my-xl"
    assert [m.name for m in library.list_models()] == ["my-xl"]

    library.remove("my-xl")
    assert library.list_models() == []
    assert not (egaku_home / "models" / "my-xl.safetensors").exists()
    with pytest.raises(ModelNotFoundError, match="no model named 'my-xl': the library is empty"):
        library.remove("my-xl")


def test_unknown_name_lists_a_few_names(sdxl_file):
    library.add(sdxl_file, name="alpha")
    with pytest.raises(ModelNotFoundError, match=r"no model named 'beta' in the library \(have: alpha\)"):
        library.info("beta")
    with pytest.raises(ModelNotFoundError):
        load_model("beta")


def test_name_clash_and_bad_names(sdxl_file, tmp_path):
    library.add(sdxl_file, name="taken")
    other = export_single_file(tiny_bundle("sd1"), tmp_path / "other.safetensors")
    with pytest.raises(InvalidRequestError, match="already named 'taken'"):
        library.add(other, name="taken")
    with pytest.raises(InvalidRequestError, match="invalid model name"):
        library.add(other, name="../escape")


def test_broken_files_are_not_added(tmp_path, egaku_home):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelLoadError):
        library.add(bad)
    assert library.list_models() == []
    assert not any(p.suffix == ".safetensors" for p in (egaku_home / "models").glob("*"))


def test_export_from_library_reimports(sdxl_file, sdxl_bundle, tmp_path):
    library.add(sdxl_file, name="xl")
    out = library.export("xl", tmp_path / "exported.safetensors")
    assert out.path == str(tmp_path / "exported.safetensors") and out.family == "sdxl"
    loaded = load_model(out.path)
    ref, got = sdxl_bundle.unet.state_dict(), loaded.unet.state_dict()
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_diffusers_folder(tmp_path):
    """A diffusers folder loads, adds, and exports; its hash covers its weight files in sorted order."""
    bundle = tiny_bundle("sd2", v_prediction=True)
    folder = tmp_path / "tiny-sd2"
    for name in ("unet", "vae", "text_encoder"):
        getattr(bundle, name).save_pretrained(folder / name)
    bundle.tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "scheduler").mkdir()
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(bundle.scheduler_config))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))

    files = weight_files(folder)
    assert [p.relative_to(folder).as_posix() for p in files] == [
        "text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"]
    expected = hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()

    loaded = load_model(folder)
    assert (loaded.family, loaded.prediction_type, loaded.sha256) == ("sd2", "v_prediction", expected)
    assert loaded.tokenizer.pad_token == "!"
    te_ref, te_got = bundle.text_encoder.state_dict(), loaded.text_encoder.state_dict()
    assert all(torch.equal(te_ref[k], te_got[k]) for k in te_ref)

    info = library.add(folder)
    assert (info.name, info.format, info.sha256, info.prediction_type) == ("tiny-sd2", "diffusers", expected, "v_prediction")
    single = library.export("tiny-sd2", tmp_path / "single.safetensors")
    assert (single.format, single.family, single.prediction_type) == ("safetensors", "sd2", "v_prediction")


def test_hashes_are_cached_by_path_size_and_mtime(tmp_path):
    path = tmp_path / "blob.safetensors"
    path.write_bytes(b"abc")
    assert sha256_path(path) == hashlib.sha256(b"abc").hexdigest()
    cached = json.loads(index_path().read_text())["hashes"][str(path.resolve())]
    assert cached["size"] == 3 and cached["sha256"] == hashlib.sha256(b"abc").hexdigest()
    path.write_bytes(b"abcd")  # new size: hashed again
    assert sha256_path(path) == hashlib.sha256(b"abcd").hexdigest()
