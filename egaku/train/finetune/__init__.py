"""Fine-tune a model on your own images: LoRA, DreamBooth, textual inversion, full fine-tune.

    from egaku.train.finetune import build_config, train
    cfg = build_config("lora", overrides={"data": "my_images/", "steps": 500})
    result = train(cfg, "runs/my-style")      # runs/my-style/my-style.safetensors, report.json, report.png

Every method shares one loop (loop.py); what trains is an adapter (lora.py, embedding.py, full.py);
DreamBooth adds prior preservation (dreambooth.py). `egaku train lora|dreambooth|embedding|finetune`
is the command line for it. Names are imported on first use (PEP 562), so reading the config stays light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FinetuneConfig": "config",
    "Method": "config",
    "build_config": "config",
    "read_config_file": "config",
    "FinetuneResult": "loop",
    "train": "loop",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'egaku.train.finetune' has no attribute '{name}'")
    return getattr(importlib.import_module(f"egaku.train.finetune.{module}"), name)
