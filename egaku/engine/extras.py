"""LoRAs and textual-inversion embeddings applied to a loaded model for one request, then undone.

- LoRAs (a request's `loras` plus its `<lora:name:w>` prompt tags): every adapted weight W becomes
  W + sum_i w_i * up_i @ down_i * alpha_i / r_i, summed in float32 and cast back (A1111's and
  ComfyUI's weight patching: no cost per step). The original tensors are kept and copied back when
  the request ends, so the base model is bit-identical afterwards and swapping LoRAs between
  requests never reloads it. A weight of 0 leaves the model untouched.
- Embeddings (A1111: a file's stem used as a word of a prompt): placeholder tokens are added to the
  tokenizer and their vectors come from a hook on the text encoder's token embedding (`TokenVectors`);
  no weight changes. They stay registered on the model, as A1111 keeps its embeddings loaded.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from egaku.engine.prompts.chunks import placeholders
from egaku.engine.request import MAX_LORA_WEIGHT
from egaku.errors import EgakuError, InvalidRequestError, ModelLoadError
from egaku.models.bundle import ModelBundle

PATCH_KEY = "_lora_patch"
EMBEDDINGS_KEY = "_embeddings"


@dataclass
class ActiveExtras:
    """What `Extras.apply` did for one request: prompts to encode and the files used (for infotexts)."""

    prompt: str  # <lora:> tags removed, embedding names replaced by their placeholder tokens
    negative_prompt: str
    loras: list[tuple[str, float, str]] = field(default_factory=list)  # (name, weight, A1111 short hash)
    embeddings: list[tuple[str, str]] = field(default_factory=list)  # (name, short hash)
    skipped_embeddings: list[str] = field(default_factory=list)  # made for another text encoder width


def request_loras(request) -> list[tuple[str, float]]:
    """A request's LoRAs: the `<lora:name:w>` tags of its prompt, then its `loras` field (the order in
    which the infotext writes them, so a replay sums the same deltas in the same order)."""
    from egaku.engine.prompts import extract_lora_tags

    loras = list(extract_lora_tags(request.prompt)[1])
    loras += [(str(name), float(weight)) for name, weight in (request.loras or [])]
    for name, weight in loras:
        if not math.isfinite(weight) or abs(weight) > MAX_LORA_WEIGHT:
            raise InvalidRequestError(f"LoRA {name!r} has weight {weight}; weights must be between "
                                      f"-{MAX_LORA_WEIGHT:g} and {MAX_LORA_WEIGHT:g}")
    return loras


def lora_key(request) -> tuple | None:
    """The LoRA set of a request for `Engine.batch_key` (requests with different sets never share a pass)."""
    try:
        return tuple(request_loras(request))
    except EgakuError:
        return None


# --- LoRA weight patches ---------------------------------------------------------------------------


@dataclass
class LoraPatch:
    key: tuple  # ((sha256, weight), ...) applied
    backups: dict[tuple[str, str, str], torch.Tensor]  # (bundle attribute, module path, "weight"/"bias") -> original
    text_changed: bool


def _module(bundle: ModelBundle, attr: str, path: str) -> torch.nn.Module:
    return getattr(bundle, attr).get_submodule(path)


def _clear_prompt_cache(bundle: ModelBundle) -> None:
    encoder = bundle.extra.get("_prompt_encoder")
    if encoder is not None:
        encoder.clear_cache()


def _bias_delta(layer, device=None) -> torch.Tensor | None:
    """The bias difference a layer carries (LyCORIS full layers' `diff_b`), or None."""
    bias_delta = getattr(layer, "bias_delta", None)
    return None if bias_delta is None else bias_delta(device)


def _misfit(layer, module: torch.nn.Module) -> str | None:
    """How a LoRA layer does not fit the module it names ("(4, 8), the model's weight is (8, 8)"), or None."""
    from egaku.models.dora import DoraLayer

    w, bias_delta = module.weight, _bias_delta(layer)
    if math.prod(layer.delta_shape) != w.numel():
        return f"{tuple(layer.delta_shape)}, the model's weight is {tuple(w.shape)}"
    if isinstance(layer, DoraLayer) and layer.norm_axis(w.shape) is None:
        return f"DoRA magnitude {tuple(layer.magnitude.shape)}, the model's weight is {tuple(w.shape)}"
    if bias_delta is not None and (module.bias is None or bias_delta.shape != module.bias.shape):
        return f"bias {tuple(bias_delta.shape)}, the model's bias is {'absent' if module.bias is None else tuple(module.bias.shape)}"
    return None


def apply_loras(bundle: ModelBundle, loras: list, keep_backup: bool = True) -> LoraPatch | None:
    """Merge [(LoraFile, weight), ...] into the bundle's weights (undoing any earlier patch first).

    Raises ModelLoadError, leaving the model untouched, when a LoRA does not fit the model.
    With keep_backup=False the merge is permanent (e.g. to evaluate a model with a LoRA baked in).
    """
    from egaku.models.lora import guess_family, module_table

    key = tuple((lora.sha256 or id(lora), float(w)) for lora, w in loras if w != 0.0)
    current: LoraPatch | None = bundle.extra.get(PATCH_KEY)
    if current is not None and current.key == key:
        return current
    restore_loras(bundle)
    if not key:
        return None
    table = bundle.extra.get("_lora_table")
    if table is None:
        table = bundle.extra["_lora_table"] = module_table(bundle)
    # 1. match every layer and check its shape before touching a weight
    plan: dict[tuple[str, str], list] = {}
    for lora, weight in loras:
        if weight == 0.0:
            continue
        matched = 0
        for name, layer in lora.layers.items():
            target = table.get(name)
            if target is None:
                continue
            misfit = _misfit(layer, _module(bundle, *target))
            if misfit:
                raise ModelLoadError(f"LoRA {lora.name!r} does not fit model {bundle.name!r} (it was made for "
                                     f"{guess_family(lora)}): layer {name} is {misfit}")
            plan.setdefault(target, []).append((layer, weight))
            matched += 1
        if matched == 0:
            raise ModelLoadError(
                f"LoRA {lora.name!r} does not fit model {bundle.name!r} ({bundle.family.value}): none of its "
                f"{len(lora.layers)} layers matches (it was made for {guess_family(lora)})")
    # 2. merge: W <- W + sum w * delta, in float32; the originals are kept to restore exactly
    backups: dict[tuple[str, str, str], torch.Tensor] = {}
    with torch.no_grad():
        for target, parts in plan.items():
            module = _module(bundle, *target)
            w = module.weight
            delta = sum(weight * layer.delta(w.shape, w.device, base=w) for layer, weight in parts)
            bias_parts = [(weight, d) for layer, weight in parts if (d := _bias_delta(layer, w.device)) is not None]
            if keep_backup:
                backups[(*target, "weight")] = w.detach().clone()
                if bias_parts:
                    backups[(*target, "bias")] = module.bias.detach().clone()
            w.copy_((w.float() + delta).to(w.dtype))
            if bias_parts:
                b = module.bias
                b.copy_((b.float() + sum(weight * d for weight, d in bias_parts)).to(b.dtype))
    text_changed = any(attr != "unet" for attr, _ in plan)
    if text_changed:
        _clear_prompt_cache(bundle)
    patch = LoraPatch(key, backups, text_changed)
    if keep_backup:
        bundle.extra[PATCH_KEY] = patch
    return patch


def restore_loras(bundle: ModelBundle) -> bool:
    """Copy back the original weights of the bundle's current LoRA patch; True if there was one."""
    patch: LoraPatch | None = bundle.extra.pop(PATCH_KEY, None)
    if patch is None:
        return False
    with torch.no_grad():
        for (attr, path, param), original in patch.backups.items():
            getattr(_module(bundle, attr, path), param).copy_(original)
    if patch.text_changed:
        _clear_prompt_cache(bundle)
    return True


# --- embeddings --------------------------------------------------------------------------------------


class TokenVectors:
    """Vectors for token ids past a text encoder's vocabulary (placeholder tokens), supplied by hooks
    on its token embedding: ids >= vocab are looked up in `table` (row = id - vocab) instead."""

    def __init__(self, encoder):
        self.embedding = encoder.get_input_embeddings()
        self.vocab = self.embedding.num_embeddings
        w = self.embedding.weight
        self.table = torch.zeros(0, w.shape[1], dtype=torch.float32, device=w.device)  # (n, D); may be a Parameter
        self._ids = None
        self._handles = [self.embedding.register_forward_pre_hook(self._pre),
                         self.embedding.register_forward_hook(self._post)]

    def set(self, token_id: int, vector: torch.Tensor) -> None:
        row = token_id - self.vocab
        if row < 0:
            raise ValueError(f"token {token_id} is inside the vocabulary")
        if row >= self.table.shape[0]:
            grow = torch.zeros(row + 1 - self.table.shape[0], self.table.shape[1], dtype=self.table.dtype,
                               device=self.table.device)
            self.table = torch.cat([self.table.detach(), grow])
        with torch.no_grad():
            self.table[row] = vector.to(self.table)

    def _pre(self, module, args):
        ids = args[0]
        self._ids = ids
        mask = ids >= self.vocab
        if bool(mask.any()):
            return (ids.masked_fill(mask, 0),) + tuple(args[1:])
        return None

    def _post(self, module, args, out):
        ids, self._ids = self._ids, None
        mask = ids >= self.vocab  # (B, L)
        if not bool(mask.any()):
            return out
        rows = (ids - self.vocab).clamp(0, max(self.table.shape[0] - 1, 0))  # (B, L)
        extra = self.table.to(out.device)[rows].to(out.dtype)  # (B, L, D)
        return torch.where(mask[..., None], extra, out)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def add_placeholder_tokens(tokenizer, tokens: list[str]) -> list[int]:
    """Add tokens verbatim (not lowercased or split) to `tokenizer`; returns their ids."""
    from transformers import AddedToken

    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in tokens])
    return tokenizer.convert_tokens_to_ids(tokens)


def token_vectors(encoder) -> TokenVectors:
    """The encoder's TokenVectors, installed on first use."""
    tv = getattr(encoder, "_egaku_token_vectors", None)
    if tv is None:
        tv = TokenVectors(encoder)
        encoder._egaku_token_vectors = tv  # plain attribute: not a submodule, not in the state dict
    return tv


def rewrite_embeddings(text: str, counts: dict[str, int]) -> str:
    """Replace each embedding name (a whole word, any case, as A1111 matches tokens) by its placeholders."""
    if not counts or not text:
        return text
    by_lower = {name.lower(): name for name in counts}
    alternatives = "|".join(re.escape(n) for n in sorted(by_lower, key=len, reverse=True))  # longest first
    pattern = re.compile(rf"(?<![\w-])({alternatives})(?![\w-])", re.IGNORECASE)

    def placeholder_words(m: re.Match) -> str:
        name = by_lower[m.group(1).lower()]
        return " ".join(placeholders(name, counts[name]))

    return pattern.sub(placeholder_words, text)


def register_embedding(bundle: ModelBundle, emb) -> bool:
    """Make `emb` usable in this bundle's prompts; False if it was made for other text encoders."""
    from egaku.models.embeddings import FIRST, SECOND

    pairs = [(bundle.tokenizer, bundle.text_encoder, emb.vectors.get(FIRST))]
    if bundle.text_encoder_2 is not None:
        pairs.append((bundle.tokenizer_2, bundle.text_encoder_2, emb.vectors.get(SECOND)))
    for _, encoder, vectors in pairs:
        if vectors is None or vectors.shape[-1] != encoder.get_input_embeddings().weight.shape[1]:
            return False
    tokens = placeholders(emb.name, emb.num_vectors)
    for tokenizer, encoder, vectors in pairs:
        ids = add_placeholder_tokens(tokenizer, tokens)
        tv = token_vectors(encoder)
        for token_id, vector in zip(ids, vectors):
            tv.set(token_id, vector)
    _clear_prompt_cache(bundle)
    return True


# --- one engine's extras -----------------------------------------------------------------------------


class Extras:
    """LoRA and embedding files for one Engine: read once (cached by path, size and mtime), applied
    per request by `apply`, LoRAs undone when the `session` around the request ends."""

    def __init__(self, cache_size: int = 8):
        self.cache_size = cache_size
        self._files: OrderedDict[tuple, object] = OrderedDict()
        self._patched: dict[int, ModelBundle] = {}
        self._active: dict[int, ActiveExtras] = {}  # by id(request), for `infotext_fields`, until the session ends
        self._depth = 0

    def _read(self, kind: str, name: str):
        from egaku.models.library_extras import ModelKind, resolve_extra

        path = resolve_extra(ModelKind(kind), name)
        st = path.stat()
        key = (kind, str(path), st.st_size, st.st_mtime_ns)
        hit = self._files.get(key)
        if hit is None:
            if kind == "lora":
                from egaku.models.lora import read_lora

                hit = read_lora(path, name=Path(name).stem if ("/" in name or "\\" in name) else name)
            else:
                from egaku.models.embeddings import read_embedding

                hit = read_embedding(path, name=Path(path).stem)
            self._files[key] = hit
            while len(self._files) > self.cache_size:
                self._files.popitem(last=False)
        self._files.move_to_end(key)
        return hit

    def lora(self, name: str):
        """The LoraFile a library name or path refers to."""
        return self._read("lora", name)

    def apply(self, bundle: ModelBundle, request) -> ActiveExtras:
        """Merge the request's LoRAs into `bundle` (until the session ends) and register the embeddings
        its prompts name; returns the prompts to encode."""
        from egaku.engine.prompts import extract_lora_tags
        from egaku.models.lora import addnet_hash_file

        loras = [(self.lora(name), weight) for name, weight in request_loras(request)]
        apply_loras(bundle, loras)
        if bundle.extra.get(PATCH_KEY) is not None:
            self._patched[id(bundle)] = bundle
        prompt = extract_lora_tags(request.prompt)[0]
        negative = extract_lora_tags(request.negative_prompt)[0]
        active = ActiveExtras(prompt, negative)
        for lora, weight in loras:
            short = (lora.metadata.get("sshs_model_hash") or addnet_hash_file(lora.path) or lora.sha256)[:12]
            active.loras.append((lora.name, weight, short))
        counts = self._embeddings(bundle, prompt + "\n" + negative, active)
        active.prompt, active.negative_prompt = rewrite_embeddings(prompt, counts), rewrite_embeddings(negative, counts)
        self._active[id(request)] = active
        return active

    def _embeddings(self, bundle: ModelBundle, text: str, active: ActiveExtras) -> dict[str, int]:
        """Register the library embeddings `text` names; {name: vector count} of those usable."""
        from egaku.models.library_extras import ModelKind, known_names

        names = known_names(ModelKind.EMBEDDING)
        if not names:
            return {}
        registered: dict[str, tuple[str, int]] = bundle.extra.setdefault(EMBEDDINGS_KEY, {})
        counts = {}
        for name in names:
            if not re.search(r"(?<![\w-])" + re.escape(name) + r"(?![\w-])", text, re.IGNORECASE):
                continue
            emb = self._read("embedding", name)
            if registered.get(name, ("", 0))[0] != emb.sha256:
                if not register_embedding(bundle, emb):
                    active.skipped_embeddings.append(name)
                    continue
                registered[name] = (emb.sha256, emb.num_vectors)
            counts[name] = registered[name][1]
            active.embeddings.append((name, emb.sha256[:12]))
        return counts

    def infotext_fields(self, request) -> dict[str, str]:
        """A1111's infotext fields for the files `apply(.., request)` used: "Lora hashes", "TI hashes"."""
        active = self._active.get(id(request))
        fields = {}
        if active is None:
            return fields
        if active.loras:
            fields["Lora hashes"] = ", ".join(f"{name}: {short}" for name, _, short in active.loras)
        if active.embeddings:
            fields["TI hashes"] = ", ".join(f"{name}: {short}" for name, short in active.embeddings)
        return fields

    def restore(self) -> None:
        """Undo every LoRA patch applied since the last restore."""
        while self._patched:
            _, bundle = self._patched.popitem()
            restore_loras(bundle)

    @contextlib.contextmanager
    def session(self):
        """Around one generation: LoRAs applied inside are undone on the way out (outermost session only)."""
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.restore()
                self._active.clear()
