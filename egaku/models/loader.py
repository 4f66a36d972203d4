"""`load_model`: any Stable Diffusion checkpoint a user has -> a ModelBundle of diffusers components.

Components are built on the meta device (no memory), then given the file's tensors one at a time
with `load_state_dict(assign=True)`: each tensor is read (and cast) once and owned by the model, so
loading never holds two copies of a state dict. Nothing here reaches the network; configs and the
tokenizer come from the checkpoint, its folder, or egaku/models/configs.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import torch

from egaku.errors import ModelLoadError, ModelNotFoundError
from egaku.models.bundle import ModelBundle, ModelFamily
from egaku.models.detect import Plan, normalize_prediction, plan_single_file, probe_v_prediction
from egaku.models.formats import CHECKPOINT_SUFFIXES, ModelFormat, TensorSource, detect_format, read_component, read_json, read_single_file
from egaku.models.hashing import sha256_path, weight_files
from egaku.models.ldm import KeyRule, text_key, text_rules, to_diffusers, unet_rules, vae_rules

BUILTIN = "builtin"
MODEL_SUFFIXES = (".safetensors", *CHECKPOINT_SUFFIXES)


def builtin_path() -> Path:
    return Path(str(files("egaku.models") / "builtin"))


def resolve_source(source: str | Path | None) -> tuple[Path, str]:
    """(path, display name) for None/"builtin", an existing file or folder, or a library name."""
    if source is None or str(source) == BUILTIN:
        path = builtin_path()
        if not weight_files(path / "unet"):
            raise ModelLoadError("the built-in model has no weights yet; run `egaku train base`")
        return path, BUILTIN
    path = Path(source).expanduser()
    if path.exists():
        return path, path.stem if path.is_file() else path.name
    looks_like_path = "/" in str(source) or "\\" in str(source) or path.suffix.lower() in MODEL_SUFFIXES
    if looks_like_path:
        raise ModelNotFoundError(f"{source} does not exist")
    from egaku.models import library  # the library resolves names; it imports this module

    return library.resolve(str(source)), str(source)


def load_model(
    source: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    prediction_type: str | None = None,
) -> ModelBundle:
    """Load a model: None or "builtin", a .safetensors/.ckpt file, a diffusers folder, or a library name.

    `prediction_type` ("epsilon" or "v_prediction") overrides what the file says or detection finds.
    Models come back in eval mode with requires_grad off, on `device` in `dtype`.
    """
    path, name = resolve_source(source)
    fmt = detect_format(path)
    if fmt is ModelFormat.DIFFUSERS:
        bundle = load_diffusers_folder(path, dtype=dtype, prediction_type=prediction_type)
    else:
        with read_single_file(path) as src:
            bundle = load_single_file(src, dtype=dtype, prediction_type=prediction_type)
    bundle.name, bundle.path = name, str(path)
    bundle.sha256 = sha256_path(path)
    for module in (bundle.unet, bundle.vae, bundle.text_encoder, bundle.text_encoder_2):
        if module is not None:
            module.to(device).eval().requires_grad_(False)
    return bundle


# --- building components -------------------------------------------------------------------------


def empty_unet(config: dict):
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        return UNet2DConditionModel.from_config(config)


def empty_vae(config: dict):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL

    with init_empty_weights():
        return AutoencoderKL.from_config(config)


def empty_text_encoder(config: dict, with_projection: bool):
    from accelerate import init_empty_weights
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = {k: v for k, v in config.items() if not k.startswith("_") and k not in ("architectures", "transformers_version")}
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    with init_empty_weights():
        return cls(CLIPTextConfig(**cfg))


def fill(module, src: TensorSource, rules: dict[str, KeyRule], dtype: torch.dtype, what: str) -> None:
    """Give `module` (on meta) its tensors from `src` via `rules`, reading each source tensor once."""
    available = set(src.keys())
    missing = [r.ldm for r in rules.values() if r.ldm not in available]
    if missing:
        raise ModelLoadError(f"{what}: {len(missing)} weights missing from the checkpoint (e.g. {missing[0]})")
    uses: dict[str, int] = {}
    for rule in rules.values():
        uses[rule.ldm] = uses.get(rule.ldm, 0) + 1
    cache: dict[str, torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}
    expected = module.state_dict()  # meta tensors: shapes only
    for key, rule in rules.items():
        tensor = cache.get(rule.ldm)
        if tensor is None:
            tensor = src.take(rule.ldm)
            cast = dtype if tensor.is_floating_point() else tensor.dtype
            tensor = tensor.to(dtype=cast, copy=src.borrowed)
        uses[rule.ldm] -= 1
        if uses[rule.ldm]:
            cache[rule.ldm] = tensor  # fused q/k/v: keep until all three parts are taken
        else:
            cache.pop(rule.ldm, None)
        value = to_diffusers(tensor, rule)
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ModelLoadError(
                f"{what}: {rule.ldm} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}"
            )
        state[key] = value
    del expected
    module.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in module.state_dict().values()):
        raise ModelLoadError(f"{what}: some weights were not loaded")


def _tokenizers(family: ModelFamily, folder: Path | None = None):
    """The SD CLIP tokenizer(s): from a diffusers folder when it has them, else egaku's copy
    (padding with "!" for SD 2.x and SDXL's second encoder, as OpenCLIP's tokenizer does)."""
    from transformers import CLIPTokenizer

    from egaku.models.tiny import load_sd_tokenizer

    def one(sub: str, pad: str):
        if folder is not None and (folder / sub / "vocab.json").is_file():
            return CLIPTokenizer.from_pretrained(str(folder / sub), local_files_only=True)
        return load_sd_tokenizer(pad_token=pad)

    first = one("tokenizer", "!" if family is ModelFamily.SD2 else "<|endoftext|>")
    second = one("tokenizer_2", "!") if family is ModelFamily.SDXL else None
    return first, second


def _default_size(unet, vae) -> int:
    return int(unet.config.sample_size) * 2 ** (len(vae.config.block_out_channels) - 1)


def load_single_file(src: TensorSource, *, dtype=torch.float32, prediction_type: str | None = None) -> ModelBundle:
    """Build a bundle from an LDM-layout single file (CompVis/Stability key names)."""
    plan: Plan = plan_single_file(src.shapes(), src.metadata, prediction_type)
    cfg = plan.configs
    unet = empty_unet(cfg["unet"])
    fill(unet, src, unet_rules(unet.state_dict().keys(), unet.config), dtype, "unet")
    vae = empty_vae(cfg["vae"])
    fill(vae, src, vae_rules(vae.state_dict().keys(), vae.config), dtype, "vae")
    encoders = {}
    for enc in plan.text_encoders:
        module = empty_text_encoder(cfg[enc.attr], with_projection=enc.attr == "text_encoder_2")
        fill(module, src, text_rules(module.state_dict().keys(), enc.layout, enc.prefix), dtype, enc.attr)
        encoders[enc.attr] = module
    scheduler = dict(cfg["scheduler"])
    pred = plan.prediction_type
    if pred is None:  # SD 2.x with no hint: A1111's probe on the loaded UNet
        pred = "v_prediction" if probe_v_prediction(unet) else "epsilon"
        if pred == "v_prediction" and unet.config.sample_size == 64 and "egaku.unet_config" not in src.metadata:
            unet.register_to_config(sample_size=96)  # SD 2.x v-models are the 768 ones
    scheduler["prediction_type"] = pred
    tokenizer, tokenizer_2 = _tokenizers(plan.family)
    return ModelBundle(
        family=plan.family, unet=unet, vae=vae, text_encoder=encoders["text_encoder"], tokenizer=tokenizer,
        scheduler_config=scheduler, text_encoder_2=encoders.get("text_encoder_2"), tokenizer_2=tokenizer_2,
        default_size=_default_size(unet, vae),
        extra={"prediction_source": "probe" if plan.prediction_type is None else plan.prediction_source},
    )


def folder_family(folder: Path) -> ModelFamily:
    """SDXL if the folder has a second text encoder; SD 2.x if its encoder uses GELU (OpenCLIP), else SD 1.x."""
    index = read_json(folder / "model_index.json")
    if "text_encoder_2" in index or (folder / "text_encoder_2" / "config.json").is_file():
        return ModelFamily.SDXL
    act = read_json(folder / "text_encoder" / "config.json").get("hidden_act", "quick_gelu")
    return ModelFamily.SD2 if act == "gelu" else ModelFamily.SD1


def _identity_rules(module, keys_in_file: list[str], text: bool) -> dict[str, KeyRule]:
    """Module key -> file key for diffusers-layout weights; text encoders may or may not wrap `text_model.`."""
    if not text:
        return {k: KeyRule(k) for k in module.state_dict().keys()}
    by_canonical = {text_key(k): k for k in keys_in_file}
    return {k: KeyRule(by_canonical.get(text_key(k), k)) for k in module.state_dict().keys()}


def load_diffusers_folder(folder: Path, *, dtype=torch.float32, prediction_type: str | None = None) -> ModelBundle:
    """Build a bundle from a diffusers folder (model_index.json + unet/ vae/ text_encoder[_2]/ scheduler/)."""
    family = folder_family(folder)
    modules = {}
    builders = {"unet": empty_unet, "vae": empty_vae,
                "text_encoder": lambda c: empty_text_encoder(c, with_projection=False),
                "text_encoder_2": lambda c: empty_text_encoder(c, with_projection=True)}
    for name, build in builders.items():
        if name == "text_encoder_2" and family is not ModelFamily.SDXL:
            continue
        sub = folder / name
        module = build(read_json(sub / "config.json"))
        with read_component(sub) as src:
            rules = _identity_rules(module, src.keys(), text=name.startswith("text"))
            fill(module, src, rules, dtype, f"{folder.name}/{name}")
        modules[name] = module
    scheduler = read_json(folder / "scheduler" / "scheduler_config.json")
    if prediction_type:
        scheduler["prediction_type"] = normalize_prediction(prediction_type)
    tokenizer, tokenizer_2 = _tokenizers(family, folder)
    return ModelBundle(
        family=family, unet=modules["unet"], vae=modules["vae"], text_encoder=modules["text_encoder"],
        tokenizer=tokenizer, scheduler_config=scheduler, text_encoder_2=modules.get("text_encoder_2"),
        tokenizer_2=tokenizer_2, default_size=_default_size(modules["unet"], modules["vae"]),
    )


def bundle_configs(bundle: ModelBundle) -> dict[str, dict]:
    """Plain JSON-able configs of a bundle's components (for export metadata and library info)."""
    out = {"unet": dict(bundle.unet.config), "vae": dict(bundle.vae.config),
           "text_encoder": bundle.text_encoder.config.to_dict(), "scheduler": dict(bundle.scheduler_config)}
    if bundle.text_encoder_2 is not None:
        out["text_encoder_2"] = bundle.text_encoder_2.config.to_dict()
    return json.loads(json.dumps(out, default=list))
