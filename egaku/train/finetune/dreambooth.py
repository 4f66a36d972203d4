"""DreamBooth (Ruiz et al. 2023): teach a subject from a few images under a rare-token prompt, with
prior preservation: images of the subject's class, drawn by the base model itself before training,
keep their loss too (weighted by prior_loss_weight), so the class does not drift to the subject.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from egaku.models.bundle import ModelBundle

CLASS_DIR = "class_images"


def draw_images(engine, prompts: list[str], folder: Path, *, stem: str, seed: int, steps: int, cfg_scale: float,
                sampler: str, model: str | None = None) -> Path:
    """Image i of `prompts[i]` with seed + i into folder/{stem}_{i:04d}.png, its caption beside it
    (.txt, the training-data convention); images already there (an interrupted run) are kept."""
    from egaku.engine import GenerationRequest
    from egaku.engine.images import save_png

    folder.mkdir(parents=True, exist_ok=True)
    for i, prompt in enumerate(prompts):
        png = folder / f"{stem}_{i:04d}.png"
        png.with_suffix(".txt").write_text(prompt + "\n", encoding="utf-8")
        if not png.exists():
            result = engine.generate(GenerationRequest(prompt, model=model, steps=steps, seed=seed + i,
                                                       cfg_scale=cfg_scale, sampler=sampler))
            save_png(result.images[0], png, parameters=result.infotexts[0])
    return folder


def generate_class_images(bundle: ModelBundle, cfg, out: Path, device, report: Callable[[str], None]) -> Path:
    """`cfg.num_class_images` images of `cfg.class_prompt` from the base model into out/class_images
    (with .txt captions); images already there (an interrupted run) are kept."""
    from egaku.engine import Engine

    folder = out / CLASS_DIR
    todo = sum(not (folder / f"class_{i:04d}.png").exists() for i in range(cfg.num_class_images))
    if not todo:
        return folder
    report(f"drawing {todo} class images of {cfg.class_prompt!r} with the base model")
    engine = Engine(device=str(device), dtype="fp32")
    engine.add_bundle("base", bundle)
    draw_images(engine, [cfg.class_prompt] * cfg.num_class_images, folder, stem="class", seed=cfg.seed + 10_000,
                steps=cfg.class_steps, cfg_scale=cfg.sample_cfg_scale, sampler=cfg.sample_sampler, model="base")
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
