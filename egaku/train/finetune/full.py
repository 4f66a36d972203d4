"""Full fine-tuning: every UNet weight trains (and the text encoders' with train_text_encoder).

Used by `egaku train finetune` and by DreamBooth in its original full-UNet form (Ruiz et al. 2023).
The result is one single-file .safetensors in the original LDM layout (egaku.models.export), which
A1111, ComfyUI and egaku load like any checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

from egaku.models.bundle import ModelBundle
from egaku.train.finetune.lora import SAVE_DTYPES, text_encoders


class FullAdapter:
    def __init__(self, cfg):
        self.cfg = cfg
        self.trains_text = bool(cfg.train_text_encoder)
        self.modules: dict[str, torch.nn.Module] = {}

    def prepare(self, bundle: ModelBundle) -> None:
        self.modules = {"unet": bundle.unet}
        if self.trains_text:
            self.modules.update(text_encoders(bundle))
        for module in self.modules.values():
            module.requires_grad_(True)

    def param_groups(self) -> list[dict]:
        return [{"params": [p for p in m.parameters() if p.requires_grad],
                 "lr": self.cfg.lr if attr == "unet" else self.cfg.text_encoder_lr}
                for attr, m in self.modules.items()]

    def state(self) -> dict[str, torch.Tensor]:
        return {f"{attr}.{k}": v.detach().clone() for attr, m in self.modules.items() for k, v in m.state_dict().items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        for attr, module in self.modules.items():
            module.load_state_dict({k[len(attr) + 1:]: v for k, v in state.items() if k.startswith(attr + ".")})

    def caption(self, text: str, rng) -> str:
        return text

    def save(self, bundle: ModelBundle, out: Path, meta: dict) -> Path:
        from egaku.models.export import export_single_file

        bundle.name = meta["output_name"]  # the SAI model spec title of the export
        return export_single_file(bundle, out / f"{meta['output_name']}.safetensors", dtype=SAVE_DTYPES[self.cfg.save_dtype])
