"""LoRA files: read kohya/A1111 and diffusers/peft layouts into one form, write kohya's.

Layouts read (one reader, normalised to kohya's flat module names):
- kohya-ss sd-scripts `networks/lora.py`, what A1111, ComfyUI and Civitai use:
  `lora_unet_<module path, '.' -> '_'>.lora_down.weight` (r, in[, kh, kw]), `.lora_up.weight`
  (out, r[, 1, 1]), `.alpha` (scalar); text encoders `lora_te_` (SD 1.x/2.x), `lora_te1_`/`lora_te2_`
  (SDXL). UNet paths are diffusers names for SD 1.x/2.x and original LDM names (`input_blocks_4_1_...`)
  for SDXL; both are accepted for every family.
- diffusers / peft: `unet.<module>.lora_A.weight` / `.lora_B.weight` (peft), `.lora.down/up.weight`,
  `.lora_linear_layer.down/up.weight`, `.processor.to_q_lora.down.weight` (old attention
  processors), `text_encoder(_2).` prefixes, raw peft `base_model.model.` (a UNet); alpha from
  `.alpha` keys or diffusers' `lora_adapter_metadata` header, else alpha = rank.
The delta of a layer is `up @ down * alpha / rank` (Hu et al. 2021, "LoRA", scaled as kohya); a
LoCon convolution with a Tucker core (`.lora_mid.weight`, (r, r, kh, kw)) is `up · mid · down`.
LyCORIS LoHa and LoKr layers in kohya-named files are read too (`egaku.models.lycoris`), and any of
these with a DoRA magnitude (`dora_scale`, peft's `lora_magnitude_vector`; `egaku.models.dora`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from egaku.errors import ModelLoadError
from egaku.models.bundle import ModelBundle, ModelFamily
from egaku.models.dora import DoraLayer
from egaku.models.lycoris import LohaLayer, LokrLayer, cp_weight, fit_delta, lycoris_layer

UNET = "lora_unet_"
TE = "lora_te_"  # SD 1.x / 2.x text encoder
TE1, TE2 = "lora_te1_", "lora_te2_"  # SDXL's two text encoders
BASE_MODEL_VERSION = {ModelFamily.SD1: "sd_v1", ModelFamily.SD2: "sd_v2", ModelFamily.SDXL: "sdxl_base_v1-0"}


@dataclass
class LoraLayer:
    """One adapted module: down (r, in[, kh, kw]), up (out, r[, 1, 1]); alpha None means rank. A
    LoCon convolution may have a Tucker core `mid` (r, r, kh, kw), then down is (r, in, 1, 1)."""

    down: torch.Tensor
    up: torch.Tensor
    alpha: float | None = None
    mid: torch.Tensor | None = None

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else float(self.alpha) / self.rank

    @property
    def in_features(self) -> int:
        return self.down.shape[1]

    @property
    def delta_shape(self) -> tuple[int, ...]:
        if self.mid is not None:
            return self.up.shape[0], self.down.shape[1], *self.mid.shape[2:]
        return self.up.shape[0], *self.down.shape[1:]

    def delta(self, shape: torch.Size | tuple, device=None, base=None) -> torch.Tensor:
        """The float32 weight delta `up @ down * scale` (or `up · mid · down * scale`), reshaped to
        the module's weight `shape`."""
        up = self.up.to(device=device, dtype=torch.float32).flatten(1)  # (out, r)
        down = self.down.to(device=device, dtype=torch.float32).flatten(1)  # (r, in*kh*kw), or (r, in) with mid
        if self.mid is not None:
            return fit_delta(cp_weight(self.mid.to(device=device, dtype=torch.float32), up.T, down) * self.scale, shape)
        return fit_delta((up @ down) * self.scale, shape)  # (out, in*kh*kw) -> shape


@dataclass
class LoraFile:
    """A LoRA read from disk: layers by kohya flat name (`lora_unet_...`), header metadata, identity."""

    layers: dict[str, LoraLayer | LohaLayer | LokrLayer | DoraLayer]
    metadata: dict[str, str] = field(default_factory=dict)
    layout: str = "kohya"  # "kohya" | "diffusers" | "peft"
    path: str = ""
    name: str = ""
    sha256: str = ""  # of the whole file (Civitai's AutoV2 is its first 10 digits)
    unsupported: list[str] = field(default_factory=list)  # layers of kinds egaku cannot apply


# --- reading ---------------------------------------------------------------------------------------

_KOHYA_PART = re.compile(r"^(lora_(?:unet|te\d?)_[^.]+)\.(.+)$")
_DIFFUSERS_PART = re.compile(
    r"^(?P<module>.+?)\.(?:"
    r"lora_(?P<ab>[AB])(?:\.[A-Za-z0-9_]+)?\.weight"  # peft: lora_A.weight, lora_A.default.weight
    r"|lora(?:_linear_layer)?\.(?P<ud>down|up)\.weight"  # lora.down.weight, lora_linear_layer.up.weight
    r"|(?P<alpha>alpha)"
    r"|(?P<mag>lora_magnitude_vector)(?:\.[A-Za-z0-9_]+)?(?:\.weight)?"  # peft DoRA: the magnitude
    r")$"
    r"|^(?P<pmodule>.+?)_lora\.(?P<pud>down|up)\.weight$"  # old processors: attn1.processor.to_q_lora.down.weight
)
_PROCESSOR = re.compile(r"\.processor\.(to_q|to_k|to_v|to_out)$")
_DIFFUSERS_PREFIXES = (("unet.", UNET), ("text_encoder_2.", TE2), ("text_encoder.", TE1), ("base_model.model.", UNET))


def _flat(prefix: str, module: str) -> str:
    return prefix + module.replace(".", "_")


def _te_module(module: str) -> str:
    """A text encoder module path in kohya's form: always under `text_model.`."""
    return "text_model." + module.removeprefix("text_model.")


def _diffusers_flat(module: str) -> str | None:
    for dprefix, kprefix in _DIFFUSERS_PREFIXES:
        if module.startswith(dprefix):
            rest = module[len(dprefix):]
            if kprefix in (TE1, TE2):
                rest = _te_module(rest)
            if m := _PROCESSOR.search(rest):  # old attention processors: attn1.processor.to_q_lora
                target = "to_out.0" if m.group(1) == "to_out" else m.group(1)
                rest = rest[: m.start()] + "." + target
            return _flat(kprefix, rest)
    return None


def _adapter_alphas(metadata: dict) -> dict[str, tuple[float, int]]:
    """diffusers' `lora_adapter_metadata` header: {component prefix: (lora_alpha, r)}."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except ValueError:
        return {}
    out = {}
    for comp, prefix in (("unet", UNET), ("text_encoder", TE1), ("text_encoder_2", TE2)):
        alpha, r = meta.get(f"{comp}.lora_alpha"), meta.get(f"{comp}.r")
        if alpha is not None and r:
            out[prefix] = (float(alpha), int(r))
    return out


def lora_from_state_dict(state_dict: dict[str, torch.Tensor], metadata: dict | None = None, where: str = "LoRA") -> LoraFile:
    """Normalise a LoRA state dict of any supported layout (see module docstring)."""
    metadata = dict(metadata or {})
    parts: dict[str, dict[str, torch.Tensor]] = {}
    layout = "kohya"
    for key, tensor in state_dict.items():
        if m := _KOHYA_PART.match(key):
            name, part = m.groups()
            parts.setdefault(name, {})[part] = tensor
            continue
        m = _DIFFUSERS_PART.match(key)
        name = _diffusers_flat(m.group("module") or m.group("pmodule")) if m else None
        if name is None:
            continue
        layout = "peft" if key.startswith("base_model.model.") else "diffusers"
        down = m.group("ab") == "A" or "down" in (m.group("ud"), m.group("pud"))
        part = ("alpha" if m.group("alpha") else "dora_scale" if m.group("mag")
                else "lora_down.weight" if down else "lora_up.weight")
        parts.setdefault(name, {})[part] = tensor
    if not parts:
        raise ModelLoadError(f"{where} holds no LoRA layers (neither kohya `lora_unet_...` nor diffusers `unet....lora_A` keys)")
    adapter = _adapter_alphas(metadata)
    layers, unsupported = {}, []
    for name, p in parts.items():
        magnitude = p.pop("dora_scale", None)
        alpha = p.get("alpha")
        alpha = None if alpha is None else float(alpha.float().reshape(-1)[0])
        known = {"lora_down.weight", "lora_up.weight", "lora_mid.weight", "alpha"}
        if "lora_down.weight" not in p or "lora_up.weight" not in p or set(p) - known:
            layer = lycoris_layer(p, alpha)
            if layer is None:
                unsupported.append(name)  # unknown kinds
                continue
        else:
            if alpha is None and (hit := next((v for k, v in adapter.items() if name.startswith(k)), None)) is not None:
                alpha = hit[0] * p["lora_down.weight"].shape[0] / hit[1]  # keep scale lora_alpha / r
            layer = LoraLayer(p["lora_down.weight"], p["lora_up.weight"], alpha, p.get("lora_mid.weight"))
        layers[name] = layer if magnitude is None else DoraLayer(layer, magnitude)
    if not layers:
        raise ModelLoadError(f"{where}: none of its {len(unsupported)} layers is a LoRA, LoHa, LoKr or full (diff) "
                             "layer egaku can apply")
    return LoraFile(layers, metadata, layout, unsupported=unsupported)


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from egaku.models.formats import ModelFormat, detect_format, read_single_file

    if detect_format(path) is ModelFormat.DIFFUSERS:
        raise ModelLoadError(f"{path} is a model folder, not a LoRA file")
    with read_single_file(path) as src:
        return {k: src.take(k) for k in src.keys()}, dict(getattr(src, "metadata", {}) or {})


def read_lora(path: str | os.PathLike, name: str | None = None, sha256: str | None = None) -> LoraFile:
    """A LoRA file (.safetensors, or a .pt/.ckpt read with weights_only) in egaku's form."""
    path = Path(path)
    tensors, metadata = _read_tensors(path)
    lora = lora_from_state_dict(tensors, metadata, where=str(path))
    lora.path, lora.name = str(path), name or path.stem
    if sha256 is None:
        from egaku.models.hashing import sha256_path

        sha256 = sha256_path(path)
    lora.sha256 = sha256
    return lora


def is_lora_keys(keys) -> bool:
    """Whether a state dict's keys look like a LoRA (used to tell LoRAs from checkpoints and embeddings)."""
    return any(_KOHYA_PART.match(k) or (_DIFFUSERS_PART.match(k) and "lora" in k) for k in keys)


# --- matching a LoRA to a model's modules ----------------------------------------------------------


def _adaptable(module) -> bool:
    return isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))


def module_table(bundle: ModelBundle) -> dict[str, tuple[str, str]]:
    """kohya flat name -> (bundle attribute, module path) for every Linear/Conv2d a LoRA can adapt.

    UNet modules are listed under their diffusers and their LDM names; the first text encoder under
    `lora_te_` and `lora_te1_`, SDXL's second under `lora_te2_`.
    """
    from egaku.models.ldm import UNET_PREFIX, unet_rules

    table: dict[str, tuple[str, str]] = {}
    unet_modules = [n for n, m in bundle.unet.named_modules() if _adaptable(m)]
    rules = unet_rules([f"{n}.weight" for n in unet_modules], bundle.unet.config)
    for n in unet_modules:
        table[_flat(UNET, n)] = ("unet", n)
        ldm = rules[f"{n}.weight"].ldm.removeprefix(UNET_PREFIX).removesuffix(".weight")
        table.setdefault(_flat(UNET, ldm), ("unet", n))
    encoders = [("text_encoder", (TE, TE1)), ("text_encoder_2", (TE2,))]
    for attr, prefixes in encoders:
        encoder = getattr(bundle, attr)
        if encoder is None:
            continue
        for n, m in encoder.named_modules():
            if _adaptable(m):
                for prefix in prefixes:
                    table[_flat(prefix, _te_module(n))] = (attr, n)
    return table


def kohya_name(bundle: ModelBundle, attr: str, module: str) -> str:
    """The name kohya's sd-scripts give a module: diffusers UNet paths for SD 1.x/2.x, LDM paths for SDXL."""
    if attr == "unet":
        if bundle.family is ModelFamily.SDXL:
            from egaku.models.ldm import UNET_PREFIX, unet_rules

            ldm = unet_rules([f"{module}.weight"], bundle.unet.config)[f"{module}.weight"].ldm
            return _flat(UNET, ldm.removeprefix(UNET_PREFIX).removesuffix(".weight"))
        return _flat(UNET, module)
    if attr == "text_encoder":
        return _flat(TE1 if bundle.family is ModelFamily.SDXL else TE, _te_module(module))
    return _flat(TE2, _te_module(module))


# --- writing ---------------------------------------------------------------------------------------


def addnet_hash(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the tensor data of a safetensors file (after the header): kohya's `sshs_model_hash`,
    the hash A1111 shows for a LoRA. The data section does not depend on the header's metadata."""
    from safetensors.torch import save

    blob = save(tensors)
    n = int.from_bytes(blob[:8], "little")
    return hashlib.sha256(blob[8 + n:]).hexdigest()


def addnet_hash_file(path: str | os.PathLike) -> str:
    """`addnet_hash` of a .safetensors file on disk (its bytes after the header); "" for other files."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return ""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        f.seek(8 + n)
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def lora_tensors(layers: dict[str, LoraLayer], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """kohya keys -> tensors: `<name>.lora_down.weight`, `.lora_up.weight`, `.alpha` (0-dim), and
    `.lora_mid.weight` for a layer with a Tucker core."""
    out = {}
    for name, layer in sorted(layers.items()):
        out[f"{name}.lora_down.weight"] = layer.down.detach().to("cpu", dtype).contiguous()
        out[f"{name}.lora_up.weight"] = layer.up.detach().to("cpu", dtype).contiguous()
        if layer.mid is not None:
            out[f"{name}.lora_mid.weight"] = layer.mid.detach().to("cpu", dtype).contiguous()
        alpha = layer.rank if layer.alpha is None else layer.alpha
        out[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=dtype)
    return out


def write_kohya(path: str | os.PathLike, layers: dict[str, LoraLayer], metadata: dict[str, str] | None = None,
                dtype: torch.dtype = torch.float32) -> Path:
    """Write a kohya-layout LoRA .safetensors atomically, adding `sshs_model_hash` to the metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ModelLoadError(f"{path}: LoRAs are written as .safetensors")
    tensors = lora_tensors(layers, dtype)
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    meta["sshs_model_hash"] = addnet_hash(tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --- describing --------------------------------------------------------------------------------------


def guess_family(lora: LoraFile) -> str:
    """sd1 / sd2 / sdxl from kohya's `ss_base_model_version`, egaku's header, or the keys; else "unknown".
    "builtin" for LoRAs of egaku's built-in model (an SD 1.x layout far narrower than SD 1.5)."""
    if lora.metadata.get("ss_sd_model_name") == "builtin":
        return "builtin"
    version = lora.metadata.get("ss_base_model_version", "")
    if version.startswith("sdxl"):
        return "sdxl"
    if version.startswith("sd_v2") or lora.metadata.get("ss_v2") == "True":
        return "sd2"
    if version.startswith("sd_v1"):
        return "sd1"
    if lora.metadata.get("egaku.family"):
        return lora.metadata["egaku.family"]
    names = lora.layers.keys()
    if any(n.startswith(TE2) for n in names) or any("input_blocks" in n for n in names):
        return "sdxl"
    widths = {layer.in_features for n, layer in lora.layers.items() if n.endswith("attn2_to_k")}
    return {768: "sd1", 1024: "sd2", 2048: "sdxl"}.get(next(iter(widths), 0), "unknown")


def trigger_words(lora: LoraFile, limit: int = 5) -> list[str]:
    """Words to prompt with: egaku's `egaku.trigger_words`, else the training tags found in nearly
    every caption (`ss_tag_frequency`)."""
    if lora.metadata.get("egaku.trigger_words"):
        try:
            return list(json.loads(lora.metadata["egaku.trigger_words"]))[:limit]
        except ValueError:
            pass
    try:
        freq = json.loads(lora.metadata.get("ss_tag_frequency") or "{}")
    except ValueError:
        return []
    counts: dict[str, int] = {}
    for tags in freq.values() if isinstance(freq, dict) else []:
        for tag, n in (tags.items() if isinstance(tags, dict) else []):
            counts[tag] = counts.get(tag, 0) + int(n)
    top = max(counts.values(), default=0)
    # the tags of (nearly) every caption: a kohya dataset's trigger word is in each one
    return [t for t, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= 0.8 * top][:limit]
