"""LoRA training (Hu et al. 2021) through peft, saved in kohya's layout with kohya's `ss_*` metadata.

peft injects `lora_A` / `lora_B` into the UNet's attention projections (and optionally the text
encoders'); only those train. The result is written as kohya-ss sd-scripts writes it
(`lora_unet_...lora_down.weight`, `.lora_up.weight`, `.alpha`), so A1111, ComfyUI and egaku load it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from egaku.models.bundle import ModelBundle, ModelFamily
from egaku.models.lora import BASE_MODEL_VERSION, LoraLayer, kohya_name, write_kohya

UNET_TARGETS = {
    "attention": ["to_q", "to_k", "to_v", "to_out.0"],
    # kohya's default for SD: every Linear / 1x1 Conv of the Transformer2DModel blocks
    "transformer": ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"],
}
# kohya's LoRA-C3Lier (`--network_args conv_dim=R`): also every layer of the ResNet blocks and the
# down/upsamplers, 3x3 convs included. Shapes live there, not in attention; A1111 and ComfyUI load it.
UNET_TARGETS["conv"] = UNET_TARGETS["transformer"] + ["conv1", "conv2", "conv_shortcut", "time_emb_proj",
                                                       "downsamplers.0.conv", "upsamplers.0.conv"]
TEXT_TARGETS = {"attention": ["q_proj", "k_proj", "v_proj", "out_proj"],
                "transformer": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]}
TEXT_TARGETS["conv"] = TEXT_TARGETS["transformer"]  # a text encoder has no convolutions
SAVE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def text_encoders(bundle: ModelBundle) -> list[tuple[str, torch.nn.Module]]:
    return [(a, getattr(bundle, a)) for a in ("text_encoder", "text_encoder_2") if getattr(bundle, a) is not None]


class LoraAdapter:
    """LoRA on the UNet (and the text encoders when cfg.train_text_encoder)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.trains_text = bool(cfg.train_text_encoder)
        self.modules: dict[str, torch.nn.Module] = {}

    def prepare(self, bundle: ModelBundle) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        cfg = self.cfg
        alpha = cfg.alpha or cfg.rank

        def config(targets):
            return LoraConfig(r=cfg.rank, lora_alpha=alpha, lora_dropout=cfg.lora_dropout, target_modules=targets,
                              init_lora_weights=True)

        torch.manual_seed(cfg.seed)  # peft initialises lora_A randomly (kaiming); lora_B is zero
        self.modules = {"unet": inject_adapter_in_model(config(UNET_TARGETS[cfg.lora_targets]), bundle.unet)}
        if self.trains_text:
            for attr, encoder in text_encoders(bundle):
                self.modules[attr] = inject_adapter_in_model(config(TEXT_TARGETS[cfg.lora_targets]), encoder)
        for module in self.modules.values():
            for name, p in module.named_parameters():
                p.requires_grad_("lora_" in name)

    def param_groups(self) -> list[dict]:
        groups = []
        for attr, module in self.modules.items():
            params = [p for n, p in module.named_parameters() if "lora_" in n]
            groups.append({"params": params, "lr": self.cfg.lr if attr == "unet" else self.cfg.text_encoder_lr})
        return groups

    def state(self) -> dict[str, torch.Tensor]:
        return {f"{attr}.{k}": v.detach().clone() for attr, m in self.modules.items()
                for k, v in m.state_dict().items() if "lora_" in k}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        for attr, module in self.modules.items():
            part = {k[len(attr) + 1:]: v for k, v in state.items() if k.startswith(attr + ".")}
            missing = [k for k in module.state_dict() if "lora_" in k and k not in part]
            if missing:
                raise ValueError(f"checkpoint lacks {missing[0]}")
            module.load_state_dict(part, strict=False)

    def caption(self, text: str, rng) -> str:
        return text

    def layers(self, bundle: ModelBundle) -> dict[str, LoraLayer]:
        """The trained adapters under kohya names."""
        return lora_layers(bundle, self.modules)

    def save(self, bundle: ModelBundle, out: Path, meta: dict) -> Path:
        cfg = self.cfg
        path = out / f"{meta['output_name']}.safetensors"
        write_kohya(path, self.layers(bundle), kohya_metadata(bundle, cfg, meta), SAVE_DTYPES[cfg.save_dtype])
        return path


def lora_layers(bundle: ModelBundle, modules: dict[str, torch.nn.Module]) -> dict[str, LoraLayer]:
    """peft LoRA layers of `modules` ({bundle attribute: module}) as kohya-named LoraLayers."""
    from peft.tuners.lora import LoraLayer as PeftLoraLayer

    out = {}
    for attr, module in modules.items():
        for name, m in module.named_modules():
            if isinstance(m, PeftLoraLayer) and "default" in m.lora_A:
                rank = m.r["default"]
                alpha = float(m.scaling["default"]) * rank
                out[kohya_name(bundle, attr, name)] = LoraLayer(
                    m.lora_A["default"].weight.detach().float().cpu(), m.lora_B["default"].weight.detach().float().cpu(), alpha)
    return out


def legacy_model_hash(path: str) -> str:
    """A1111's old 8-digit model hash (sha256 of 64 KiB at 1 MiB) of a file; "" for folders."""
    import hashlib

    p = Path(path)
    if not p.is_file():
        return ""
    with open(p, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def kohya_metadata(bundle: ModelBundle, cfg, meta: dict) -> dict[str, str]:
    """The `ss_*` training metadata kohya-ss sd-scripts (train_network.py) writes, plus the SAI model spec."""
    from egaku.models.detect import architecture
    from egaku.models.export import IMPLEMENTATION

    dataset = meta["dataset"]
    dirname = Path(dataset.root).name
    side = meta["resolution"]
    md = {
        "ss_session_id": str(meta.get("session_id", cfg.seed)),
        "ss_training_started_at": str(meta["started_at"]),
        "ss_training_finished_at": str(time.time()),
        "ss_output_name": meta["output_name"],
        "ss_learning_rate": str(cfg.lr),
        "ss_unet_lr": str(cfg.lr),
        "ss_text_encoder_lr": str(cfg.text_encoder_lr if cfg.train_text_encoder else 0.0),
        "ss_num_train_images": str(len(dataset.examples)),
        "ss_num_reg_images": str(meta.get("class_images", 0)),
        "ss_num_batches_per_epoch": str(meta["batches_per_epoch"]),
        "ss_num_epochs": str(meta["epochs"]),
        "ss_epoch": str(meta["epochs"]),
        "ss_steps": str(meta["steps"]),
        "ss_max_train_steps": str(cfg.steps),
        "ss_batch_size_per_device": str(cfg.batch_size),
        "ss_total_batch_size": str(cfg.batch_size * cfg.grad_accum),
        "ss_gradient_checkpointing": str(bool(cfg.gradient_checkpointing)),
        "ss_gradient_accumulation_steps": str(cfg.grad_accum),
        "ss_lr_warmup_steps": str(cfg.warmup_steps),
        "ss_lr_scheduler": cfg.lr_scheduler,
        "ss_optimizer": f"torch.optim.AdamW(weight_decay={cfg.weight_decay})",
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(cfg.rank),
        "ss_network_alpha": str(float(cfg.alpha or cfg.rank)),
        "ss_network_dropout": str(cfg.lora_dropout),
        "ss_network_args": json.dumps({"conv_dim": str(cfg.rank), "conv_alpha": str(float(cfg.alpha or cfg.rank))}
                                      if cfg.lora_targets == "conv" else {}),
        "ss_network_train_unet_only": str(not cfg.train_text_encoder),
        "ss_mixed_precision": meta["mixed_precision"],
        "ss_full_fp16": "False",
        "ss_v2": str(bundle.family is ModelFamily.SD2),
        "ss_base_model_version": BASE_MODEL_VERSION[bundle.family],
        "ss_clip_skip": "1",
        "ss_resolution": f"({side}, {side})",
        "ss_seed": str(cfg.seed),
        "ss_noise_offset": str(cfg.noise_offset),
        "ss_min_snr_gamma": str(cfg.min_snr_gamma),
        "ss_caption_dropout_rate": str(cfg.caption_dropout),
        "ss_sd_model_name": bundle.name or "builtin",
        "ss_sd_model_hash": legacy_model_hash(bundle.path) or bundle.sha256[:8],
        "ss_new_sd_model_hash": bundle.sha256,
        "ss_tag_frequency": json.dumps({dirname: dataset.tag_frequency()}, ensure_ascii=False),
        "ss_dataset_dirs": json.dumps({dirname: {"n_repeats": 1, "img_count": len(dataset.examples)}}),
        "ss_bucket_info": json.dumps({"buckets": {str(i): {"resolution": [int(x) for x in k.split("x")], "count": n}
                                                  for i, (k, n) in enumerate(dataset.buckets().items())}}),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": architecture(bundle.family, bundle.is_inpaint, bundle.prediction_type) + "/lora",
        "modelspec.implementation": IMPLEMENTATION[bundle.family],
        "modelspec.title": meta["output_name"],
        "modelspec.resolution": f"{side}x{side}",
        "egaku.family": bundle.family.value,
        "egaku.method": cfg.method,
    }
    if cfg.trigger_words:
        md["egaku.trigger_words"] = json.dumps(cfg.trigger_words, ensure_ascii=False)
    return md
