"""DreamBooth (Ruiz et al. 2023): teach a subject from a few images under a rare-token prompt, with
prior preservation: images of the subject's class, drawn by the base model itself before training,
keep their loss too (weighted by prior_loss_weight), so the class does not drift to the subject.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from egaku.models.bundle import ModelBundle

CLASS_DIR = "class_images"


def generate_class_images(bundle: ModelBundle, cfg, out: Path, device, report: Callable[[str], None]) -> Path:
    """`cfg.num_class_images` images of `cfg.class_prompt` from the base model into out/class_images
    (with .txt captions); images already there (an interrupted run) are kept."""
    from egaku.engine import Engine, GenerationRequest
    from egaku.engine.images import save_png

    folder = out / CLASS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(cfg.num_class_images) if not (folder / f"class_{i:04d}.png").exists()]
    if not todo:
        return folder
    report(f"drawing {len(todo)} class images of {cfg.class_prompt!r} with the base model")
    engine = Engine(device=str(device), dtype="fp32")
    engine.add_bundle("base", bundle)
    for i in todo:
        request = GenerationRequest(cfg.class_prompt, model="base", steps=cfg.class_steps, seed=cfg.seed + 10_000 + i,
                                    cfg_scale=cfg.sample_cfg_scale, sampler=cfg.sample_sampler)
        result = engine.generate(request)
        (folder / f"class_{i:04d}.txt").write_text(cfg.class_prompt + "\n", encoding="utf-8")
        save_png(result.images[0], folder / f"class_{i:04d}.png", parameters=result.infotexts[0])
    bundle.extra.pop("_prompt_encoder", None)  # its cache is stale once the text encoder trains
    return folder


def make_adapter(cfg):
    """The trainable part for a method: LoRA, textual-inversion vectors, or the full UNet."""
    from egaku.train.finetune.config import Method

    method = Method(cfg.method)
    if method is Method.LORA or (method is Method.DREAMBOOTH and cfg.dreambooth_mode == "lora"):
        from egaku.train.finetune.lora import LoraAdapter

        return LoraAdapter(cfg)
    if method is Method.EMBEDDING:
        from egaku.train.finetune.embedding import EmbeddingAdapter

        return EmbeddingAdapter(cfg)
    from egaku.train.finetune.full import FullAdapter

    return FullAdapter(cfg)
