"""The model cache: LRU within a byte budget, pinned entries survive, sizes are real bytes."""

import pytest

from egaku.engine.cache import ModelCache, bundle_bytes
from egaku.models.tiny import tiny_bundle


@pytest.fixture(scope="module")
def bundles():
    return {name: tiny_bundle(seed=i) for i, name in enumerate("abc")}


def test_bundle_bytes_counts_every_weight(bundles):
    b = bundles["a"]
    expected = sum(
        p.numel() * p.element_size()
        for m in (b.unet, b.vae, b.text_encoder)
        for p in (*m.parameters(), *m.buffers())
    )
    assert bundle_bytes(b) == expected > 0


def test_lru_eviction_within_budget(bundles):
    size = bundle_bytes(bundles["a"])
    cache = ModelCache(budget=int(size * 2.5))  # room for two
    loads = []

    def loader(name):
        def load():
            loads.append(name)
            return bundles[name]
        return load

    for name in "ab":
        cache.get_or_load(name, loader(name))
    cache.get_or_load("a", loader("a"))  # a is now the most recent
    cache.get_or_load("c", loader("c"))  # evicts b, the least recent
    assert cache.keys() == ["a", "c"]
    assert loads == ["a", "b", "c"]
    assert cache.used <= cache.budget
    assert cache.get_or_load("b", loader("b")) is bundles["b"]
    assert cache.keys() == ["c", "b"] and loads == ["a", "b", "c", "b"]


def test_size_hint_evicts_before_loading(bundles):
    size = bundle_bytes(bundles["a"])
    cache = ModelCache(budget=int(size * 1.5))
    cache.get_or_load("a", lambda: bundles["a"])
    seen_when_loading = []

    def load_b():
        seen_when_loading.append(cache.keys())
        return bundles["b"]

    cache.get_or_load("b", load_b, size_hint=size)
    assert seen_when_loading == [[]]  # a was gone before b was read
    assert cache.keys() == ["b"]


def test_pinned_entries_survive(bundles):
    size = bundle_bytes(bundles["a"])
    cache = ModelCache(budget=int(size * 1.5))
    cache.pin("pinned", bundles["a"])
    cache.get_or_load("b", lambda: bundles["b"])
    cache.get_or_load("c", lambda: bundles["c"])  # over budget: b goes, the pinned one stays
    assert cache.keys() == ["pinned", "c"]
    cache.clear()
    assert cache.keys() == ["pinned"]
    assert cache.get("pinned") is bundles["a"]


def test_engine_loads_files_through_the_cache(tmp_path, bundles):
    from egaku.engine import Engine, GenerationRequest
    from egaku.models import export_single_file

    a = export_single_file(bundles["a"], tmp_path / "model-a.safetensors")
    b = export_single_file(bundles["b"], tmp_path / "model-b.safetensors")
    engine = Engine(device="cpu", dtype="fp32", memory_budget=int(bundle_bytes(bundles["a"]) * 2.5))
    engine.add_bundle("pinned", bundles["c"])
    first = engine.load(str(a))
    assert engine.load(str(tmp_path / "." / "model-a.safetensors")) is first  # another spelling, same model
    engine.load(str(b))  # budget holds two: the pinned one and b
    assert engine.cache.keys() == ["pinned", str(b.resolve())]
    assert engine.load(str(a)) is not first  # a was evicted: loaded again
    assert engine.load("pinned") is bundles["c"]

    result = engine.generate(GenerationRequest("a cat", model=str(a), steps=2, seed=1, sampler="Euler"))
    assert result.model_name == "model-a"
    assert result.model_hash == first.short_hash and len(result.model_hash) == 10
    assert f"Model hash: {result.model_hash}, Model: model-a" in result.infotexts[0]
