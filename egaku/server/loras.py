"""LoRAs and embeddings on the wire: the library's listings (native and A1111 shapes) and the `loras`
extension field read from JSON bodies and multipart forms.

Every wire format takes `loras: [{"name": str, "weight": float}]` (A1111 clients keep using
`<lora:name:w>` prompt tags). Multipart forms (Stability image-to-image, OpenAI edits) carry it as
indexed fields `loras[0][name]` / `loras[0][weight]`, as the openai client's `extra_body` sends it
(`loras[][name]`, `loras[][weight]`), or as one JSON string field `loras`.
Names are checked against the library at submit (egaku.jobs.validate.check_loras).
"""

from __future__ import annotations

import json
import re

from egaku.server.errors import ApiError

_INDEXED = re.compile(r"^loras\[(\d*)\]\[(name|weight)\]$")


def lora_pairs(loras) -> list[tuple[str, float]]:
    """[(name, weight)] of a parsed `loras` field (LoraIn models or dicts); None = none."""
    out = []
    for item in loras or []:
        if isinstance(item, dict):
            out.append((item.get("name"), item.get("weight", 1.0)))
        else:
            out.append((item.name, item.weight))
    return out


def _weight(value: str, code: str):
    try:
        return float(value)
    except ValueError:
        raise ApiError(400, code, f"LoRA weight must be a number, got {value[:40]!r}", param="loras") from None


def form_loras(items: list[tuple[str, str]], *, code: str = "bad_request") -> list[tuple[str, float]]:
    """The LoRAs of a multipart form's (key, value) text fields (other keys are ignored)."""
    pairs: list[tuple[str, float]] = []
    indexed: dict[int, dict] = {}
    names: list[str] = []  # loras[][name], loras[][weight]: paired by position (the openai client
    weights: list[float] = []  # groups repeated keys, so all names may come before all weights)
    for key, value in items:
        if key == "loras":
            try:
                parsed = json.loads(value)
            except ValueError:
                raise ApiError(400, code, "loras must be a JSON list of {name, weight}", param="loras") from None
            if not isinstance(parsed, list) or not all(isinstance(x, dict) for x in parsed):
                raise ApiError(400, code, "loras must be a JSON list of {name, weight}", param="loras")
            pairs += lora_pairs(parsed)
            continue
        m = _INDEXED.match(key)
        if m is None:
            continue
        index, attr = m.groups()
        if not index:
            (names if attr == "name" else weights).append(value if attr == "name" else _weight(value, code))
            continue
        if int(index) >= 64:
            raise ApiError(400, code, f"unexpected form field '{key}'", param="loras")
        indexed.setdefault(int(index), {})[attr] = value if attr == "name" else _weight(value, code)
    for entry in [indexed[i] for i in sorted(indexed)]:
        if "name" not in entry:
            raise ApiError(400, code, "each LoRA needs a name (loras[i][name])", param="loras")
        pairs.append((entry["name"], entry.get("weight", 1.0)))
    if weights and len(weights) != len(names):
        raise ApiError(400, code, f"{len(names)} loras[][name] fields but {len(weights)} loras[][weight]; give "
                       "a weight for each LoRA or for none", param="loras")
    pairs += [(name, weights[i] if weights else 1.0) for i, name in enumerate(names)]
    return pairs


# --- listings ----------------------------------------------------------------------------------------


def loras() -> list[dict]:
    """The library's LoRAs: [{"name", "hash" (AutoV2), "sha256", "family", "trigger_words", "rank", "alpha"}]."""
    from egaku.models.library_extras import ModelKind, list_extras

    return [{"name": i.name, "hash": i.autov2, "sha256": i.sha256, "family": i.family,
             "trigger_words": list(i.trigger_words), "rank": i.rank, "alpha": i.alpha}
            for i in list_extras(ModelKind.LORA)]


def embeddings() -> list[dict]:
    """The library's embeddings: [{"name", "hash", "sha256", "family", "vectors", "trigger_words"}]."""
    from egaku.models.library_extras import ModelKind, list_extras

    return [{"name": i.name, "hash": i.autov2, "sha256": i.sha256, "family": i.family, "vectors": i.vectors,
             "trigger_words": list(i.trigger_words)} for i in list_extras(ModelKind.EMBEDDING)]


def _safetensors_metadata(path) -> dict:
    """A safetensors header's metadata as A1111 returns it (values that are JSON objects decoded)."""
    from egaku.models.formats import SafetensorsSource

    if not str(path).lower().endswith(".safetensors"):
        return {}
    with SafetensorsSource(path) as src:
        raw = dict(src.metadata)
    out = {}
    for key, value in raw.items():
        if isinstance(value, str) and value[:1] == "{":
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[key] = value
    return out


def a1111_loras() -> list[dict]:
    """A1111's GET /sdapi/v1/loras: [{"name", "alias", "path", "metadata"}]; `path` is relative to the
    models folder (a server does not show its file system)."""
    from pathlib import Path

    from egaku.models.library_extras import ModelKind, list_extras
    from egaku.paths import models_dir

    out = []
    root = models_dir().resolve()
    for info in list_extras(ModelKind.LORA):
        path = Path(info.path).resolve()
        shown = path.relative_to(root).as_posix() if root in path.parents else path.name
        metadata = _safetensors_metadata(path)
        alias = metadata.get("ss_output_name") if isinstance(metadata.get("ss_output_name"), str) else None
        out.append({"name": info.name, "alias": alias or info.name, "path": shown, "metadata": metadata})
    return out


def a1111_embeddings() -> dict:
    """A1111's GET /sdapi/v1/embeddings: {"loaded": {name: {"step", "sd_checkpoint", "sd_checkpoint_name",
    "shape", "vectors"}}, "skipped": {}}. Every library embedding is listed as loaded: the engine skips one
    made for another text encoder when a prompt names it, as A1111 does."""
    from egaku.models.embeddings import read_embedding
    from egaku.models.library_extras import ModelKind, list_extras

    loaded = {}
    for info in list_extras(ModelKind.EMBEDDING):
        emb = read_embedding(info.path, info.name, info.sha256)
        loaded[info.name] = {
            "step": emb.step, "sd_checkpoint": emb.metadata.get("sd_checkpoint"),
            "sd_checkpoint_name": emb.metadata.get("sd_checkpoint_name"),
            "shape": int(next(iter(emb.vectors.values())).shape[-1]), "vectors": emb.num_vectors,
        }
    return {"loaded": loaded, "skipped": {}}
