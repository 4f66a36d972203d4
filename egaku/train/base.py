"""Train egaku's built-in model from scratch on the shapes world: VAE, then text encoder + UNet.

    egaku train base --out runs/base --minutes 120        # resumable: run the same command again

Phases, each checkpointed so an interrupted run resumes where it stopped:
1. the VAE (AutoencoderKL, factor 8) on rendered scenes (L1 + MSE + a tiny KL term, as LDM), then
   optionally its decoder alone on the frozen encoder's latents (`egaku.train.vae`);
2. a pool of scenes encoded to latents once (the VAE is frozen from here on);
3. the CLIP text encoder and the UNet together on the denoising loss with Min-SNR-5 weighting
   (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy"), 10% empty
   captions for classifier-free guidance, an EMA of the weights for sampling. The noise schedule
   and prediction type are the model's own scheduler_config: the built-in model uses v-prediction
   with zero terminal SNR (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are
   Flawed"), because with SD's schedule the last timestep still leaks the image's mean colour, and
   on 16x16 latents the model learned to take the background from the noise instead of the prompt;
   optionally with a token-grounding loss on the cross-attention (`egaku.train.grounding`);
4. export: the EMA weights in fp16 as a diffusers folder (the same layout as any SD 1.x model).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from egaku.errors import InvalidRequestError
from egaku.train.data import fitting_caption, fitting_caption_with_spans, render_batch, tokenize
from egaku.train.grounding import (
    AttentionRecorder,
    grounding_loss,
    phrase_region_masks,
    phrase_token_masks,
    touched_cells,
)
from egaku.train.objective import diffusion_target, min_snr_weights
from egaku.train.run_io import log_line, progress_bar, rng_from_list, rng_to_list, save_checkpoint
from egaku.train.vae import encoder_tag, train_decoder, train_refine, train_vae
from egaku.world.render import object_mask, object_masks
from egaku.world.scene import scene_from_dict

BUILTIN_CONFIG_DIR = Path(__file__).resolve().parent.parent / "models" / "builtin"
MAX_PHRASES = 4  # grounded phrases per caption: up to 3 objects and the artist's name


@dataclass
class BaseTrainConfig:
    config_dir: str = str(BUILTIN_CONFIG_DIR)  # diffusers folder whose configs define the model
    seed: int = 0
    vae_steps: int = 1200  # VAE optimisation steps
    vae_batch: int = 8
    # Whole images: a VAE trained on small crops reconstructs full images badly here, since its
    # GroupNorm statistics (and mid-block attention) see mostly flat background in a crop.
    vae_crop: int = 128
    vae_lr: float = 4e-4
    vae_object_weight: float = 10.0  # extra loss weight on object pixels
    decoder_steps: int = 0  # then the decoder alone on the frozen encoder's latents (0: skip)
    decoder_lr: float = 2e-4
    decoder_latent_noise: float = 0.05  # Gaussian noise on its input latents, times their std
    # then the whole VAE refined for the artists' textures, its latents anchored to where they were
    # (`egaku.train.vae.train_refine`; 0: skip). Added after the VAE was found to paint dots and
    # stripes as flat colour, which no UNet can then draw.
    vae_refine_steps: int = 0
    pool_size: int = 24000  # scenes encoded once and reused with fresh captions
    batch: int = 32
    lr: float = 4e-4
    warmup: int = 200
    ema_decay: float = 0.999
    uncond_prob: float = 0.1  # empty caption probability, for classifier-free guidance
    min_snr_gamma: float = 5.0
    # Loss weight of latent pixels that objects touch, against 1 for background (kohya's masked loss,
    # softened). Objects cover ~5% of a scene, so plain MSE is mostly background: colours and
    # backgrounds are learned long before shapes and positions.
    object_loss_weight: float = 5.0
    # Timesteps from this one up weigh every latent pixel alike (None: the object weight applies at
    # every timestep). A weight that depends on the target tilts what the UNet learns: it predicts
    # the weighted posterior mean, as if each uncertain pixel were `object_loss_weight` times likelier
    # to be an object. Where the noise still hides the layout that means extra objects: v7, trained
    # with the weight at every timestep, drew six stars for "three blue stars" and two for "a blue
    # star" even without guidance. Below the gate the layout is settled and the weight only sharpens.
    object_loss_max_timestep: int | None = None
    # Share of each batch spent on layout: captions that always name positions, and timesteps from
    # the noisier half of the schedule, where a sampler decides where things go (SD3 likewise
    # samples more mid/high-noise timesteps). Added after v2's text encoder was found to ignore
    # position words entirely (benchmarks/prompt_sensitivity.py).
    layout_share: float = 0.0
    # Weight of the token-grounding loss (TokenCompose, `egaku.train.grounding`): each object
    # phrase's cross-attention should fall on its object, and the artist's name's on every object
    # (v5). 0 turns it off. Added after v3 was found to look at its objects no more than chance;
    # with it, v4 follows positions (19% -> 100%).
    grounding_weight: float = 0.1
    # Share of each batch on counting scenes captioned without positions ("three red stars"), the
    # way people ask for a number of things, at the noisier timesteps where the count is decided.
    # Added after v5 drew four to seven stars for "three blue stars": such captions were 1.6% of
    # its training examples.
    count_share: float = 0.0
    # Cosine decay of the learning rate to lr_final_ratio x lr over lr_decay_steps UNet steps,
    # starting at step lr_decay_start (0 steps: constant after warm-up).
    lr_decay_start: int = 0
    lr_decay_steps: int = 0
    lr_final_ratio: float = 0.1
    max_steps: int = 1_000_000  # UNet steps; usually the time budget ends the run first
    minutes: float = 120.0  # wall-clock budget for this invocation (all phases)
    checkpoint_minutes: float = 5.0
    sample_every: int = 500
    init_from: str | None = None  # start from an exported model folder instead of from scratch

    def __post_init__(self):
        if not 0.0 <= self.layout_share <= 1.0:
            raise InvalidRequestError(f"layout-share must be between 0 and 1, not {self.layout_share:g}")
        if not 0.0 <= self.count_share <= 1.0 - self.layout_share:
            raise InvalidRequestError(
                f"count-share must be between 0 and 1 minus layout-share ({1 - self.layout_share:g}), not {self.count_share:g}")
        if self.lr_decay_steps < 0 or not 0.0 <= self.lr_final_ratio <= 1.0:
            raise InvalidRequestError("lr-decay-steps must be 0 or more and lr-final-ratio between 0 and 1")
        if min(self.vae_steps, self.decoder_steps, self.vae_refine_steps) < 0:
            raise InvalidRequestError("vae-steps, decoder-steps and vae-refine-steps must be 0 or more")
        if self.object_loss_max_timestep is not None and self.object_loss_max_timestep < 0:
            raise InvalidRequestError(f"object-loss-max-timestep must be 0 or more, not {self.object_loss_max_timestep}")
        if self.object_loss_weight <= 0:
            raise InvalidRequestError(f"object-loss-weight must be positive, not {self.object_loss_weight:g}")
        if self.grounding_weight < 0:
            raise InvalidRequestError(f"grounding-weight must be 0 or more, not {self.grounding_weight:g}")


def _load_components(cfg: BaseTrainConfig):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    d = Path(cfg.config_dir)
    torch.manual_seed(cfg.seed)
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(d / "vae"))
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(d / "unet"))
    te = CLIPTextModel(CLIPTextConfig.from_pretrained(d / "text_encoder"))
    tok = CLIPTokenizer.from_pretrained(d / "tokenizer")
    sched = json.loads((d / "scheduler" / "scheduler_config.json").read_text())
    return vae, unet, te, tok, sched


@torch.no_grad()
def build_pool(vae, cfg: BaseTrainConfig, out: Path) -> dict:
    """Phase 2: render `pool_size` scenes and encode them (posterior mean) once."""
    path, scenes_path = out / "pool.pt", out / "pool_scenes.json"
    tag = encoder_tag(out)
    if path.exists() and scenes_path.exists():
        pool = torch.load(path, weights_only=True)
        stored = pool.get("encoder", [pool.get("vae_step", tag[0])])  # older pools: the VAE step alone
        if list(stored) == tag:  # latents of this very encoder
            pool["scenes"] = [scene_from_dict(d) for d in json.loads(scenes_path.read_text())]
            return pool
    rng = random.Random(cfg.seed + 1)
    scenes, latents = [], []
    for start in range(0, cfg.pool_size, 64):
        batch_scenes, x = render_batch(rng, min(64, cfg.pool_size - start))
        latents.append(vae.encode(x).latent_dist.mean.half())  # (B, 4, 16, 16)
        scenes.extend(batch_scenes)
        if start % 2048 == 0:
            log_line(out, phase="pool", encoded=start)
    lat = torch.cat(latents)
    scale = float(1.0 / lat.float().std())
    tmp = scenes_path.with_suffix(".tmp")
    tmp.write_text(json.dumps([asdict(sc) for sc in scenes]))
    tmp.replace(scenes_path)
    save_checkpoint({"latents": lat, "scaling_factor": scale, "encoder": tag}, path)
    return {"scenes": scenes, "latents": lat, "scaling_factor": scale}


def learning_rate(cfg: BaseTrainConfig, step: int) -> float:
    """Linear warm-up, constant, then a cosine decay (Loshchilov & Hutter 2017) to lr_final_ratio x lr."""
    lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup)
    if cfg.lr_decay_steps == 0 or step < cfg.lr_decay_start:
        return lr
    done = min(1.0, (step - cfg.lr_decay_start) / cfg.lr_decay_steps)
    return lr * (cfg.lr_final_ratio + (1 - cfg.lr_final_ratio) * 0.5 * (1 + math.cos(math.pi * done)))


def batch_examples(scenes, groups: list[int], rng: random.Random, tok, cfg: BaseTrainConfig):
    """One batch's scene indices and (caption, phrase spans), in three parts: layout examples
    (captions naming positions), counting examples (counting scenes, captions without positions),
    then ordinary ones (any caption, or an empty one for classifier-free guidance). Also returns
    how many lead examples take noisier timesteps (the first two parts)."""
    n_layout = round(cfg.batch * cfg.layout_share)
    n_count = round(cfg.batch * cfg.count_share) if groups else 0
    idx = [rng.randrange(len(scenes)) for _ in range(cfg.batch)]
    if n_count:
        idx[n_layout:n_layout + n_count] = [groups[rng.randrange(len(groups))] for _ in range(n_count)]
    captions = [fitting_caption_with_spans(scenes[i], rng, tok, positions=True, style=True) if k < n_layout
                else fitting_caption_with_spans(scenes[i], rng, tok, positions=False, style=True) if k < n_layout + n_count
                else ("", []) if rng.random() < cfg.uncond_prob
                else fitting_caption_with_spans(scenes[i], rng, tok, style=True)
                for k, i in enumerate(idx)]
    return idx, captions, n_layout + n_count


def train_unet(unet, te, tok, sched_cfg, pool, cfg: BaseTrainConfig, out: Path, deadline: float, on_sample=None,
               sample_modules: dict | None = None):
    """Phase 3: text encoder + UNet on the latent pool. Returns the EMA state dicts, and the UNet
    steps at which this invocation started and stopped."""
    from diffusers import DDPMScheduler

    noise_sched = DDPMScheduler.from_config(sched_cfg)
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    ema = {"unet": {k: v.detach().clone() for k, v in unet.state_dict().items()},
           "te": {k: v.detach().clone() for k, v in te.state_dict().items()}}
    ck = out / "unet.pt"
    step = 0
    rng = random.Random(cfg.seed + 2)
    if ck.exists():
        state = torch.load(ck, weights_only=True)
        unet.load_state_dict(state["unet"])
        te.load_state_dict(state["te"])
        ema = state["ema"]
        opt.load_state_dict(state["opt"])
        step = state["step"]
        rng.setstate(rng_from_list(state["rng"]))
        torch.set_rng_state(state["torch_rng"])
    first_step = step
    scale = pool["scaling_factor"]
    latents_all, scenes = pool["latents"], pool["scenes"]
    n_timesteps = noise_sched.config.num_train_timesteps
    groups = [i for i, s in enumerate(scenes) if s.group]  # counting scenes, for cfg.count_share
    weights = None
    if cfg.object_loss_weight != 1.0:
        weights = 1.0 + (cfg.object_loss_weight - 1.0) * latent_object_masks(scenes, latents_all.shape[-1])  # (N, 1, h, w)
    recorder = AttentionRecorder(unet) if cfg.grounding_weight > 0 else None
    region_masks: dict[int, torch.Tensor] = {}

    def region_cache(i: int) -> torch.Tensor:  # (n_objects, h, w): each object's mask, max-pooled to latent size
        if i not in region_masks:
            region_masks[i] = F.adaptive_max_pool2d(torch.from_numpy(object_masks(scenes[i])), latents_all.shape[-1])
        return region_masks[i]

    unet.train()
    te.train()
    last_ck, t_last, losses, g_losses = time.time(), time.time(), [], []

    def checkpoint():
        save_checkpoint({"unet": unet.state_dict(), "te": te.state_dict(), "ema": ema, "opt": opt.state_dict(), "step": step,
               "rng": rng_to_list(rng.getstate()), "torch_rng": torch.get_rng_state()}, ck)

    bar = progress_bar("unet", cfg.max_steps if cfg.max_steps < 1_000_000 else None, step)
    while step < cfg.max_steps and time.time() < deadline:
        idx, captions, n_noisy = batch_examples(scenes, groups, rng, tok, cfg)
        x0 = latents_all[idx].float() * scale  # (B, 4, 16, 16)
        texts = [text for text, _ in captions]
        ids = tokenize(tok, texts)  # (B, 77)
        noise = torch.randn_like(x0)
        t = torch.randint(0, n_timesteps, (cfg.batch,))
        t[:n_noisy] = torch.randint(n_timesteps // 2, n_timesteps, (n_noisy,))
        xt = noise_sched.add_noise(x0, noise, t)
        for g in opt.param_groups:
            g["lr"] = learning_rate(cfg, step)
        cond = te(ids).last_hidden_state  # (B, 77, D)
        if recorder is None:
            pred = unet(xt, t, cond).sample  # (B, 4, 16, 16)
        else:
            with recorder:
                pred = unet(xt, t, cond).sample
                maps = recorder.maps
            spans = [sp for _, sp in captions]
            g_loss = grounding_loss(maps, phrase_token_masks(tok, texts, spans, MAX_PHRASES),
                                    phrase_region_masks([region_cache(i) for i in idx], spans, MAX_PHRASES))
        target = diffusion_target(noise_sched, x0, noise, t)
        per_pixel = F.mse_loss(pred, target, reduction="none")  # (B, 4, h, w)
        per_sample = per_pixel.mean(dim=(1, 2, 3))
        if weights is not None:
            w = gated_object_weights(weights[idx], t, cfg.object_loss_max_timestep)  # (B, 1, h, w)
            weighted = (per_pixel * w).mean(dim=(1, 2, 3)) / w.mean(dim=(1, 2, 3))
        else:
            weighted = per_sample
        loss = (weighted * min_snr_weights(noise_sched, t, cfg.min_snr_gamma)).mean()
        if recorder is not None:
            loss = loss + cfg.grounding_weight * g_loss
            g_losses.append(float(g_loss.detach()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{float(per_sample.detach().mean()):.4f}", left=f"{(deadline - time.time()) / 60:.0f}min")
        losses.append(float(per_sample.detach().mean()))
        with torch.no_grad():
            d = min(cfg.ema_decay, (1 + step) / (10 + step))
            for name, model in (("unet", unet), ("te", te)):
                for k, v in model.state_dict().items():
                    if v.dtype.is_floating_point:
                        ema[name][k].mul_(d).add_(v.detach(), alpha=1 - d)
                    else:
                        ema[name][k].copy_(v)
        if step % 25 == 0:
            now = time.time()
            extra = {"grounding_loss": sum(g_losses) / len(g_losses)} if g_losses else {}
            log_line(out, phase="unet", step=step, loss=sum(losses) / len(losses), s_per_step=(now - t_last) / 25, **extra)
            losses, g_losses, t_last = [], [], now
        if time.time() - last_ck > cfg.checkpoint_minutes * 60:
            checkpoint()
            last_ck = time.time()
        if on_sample and step % cfg.sample_every == 0:
            on_sample(step, ema, {"unet": unet, "te": te, **(sample_modules or {})})
            unet.train()
            te.train()
    bar.close()
    checkpoint()
    return ema, first_step, step


def gated_object_weights(weights: torch.Tensor, t: torch.Tensor, max_timestep: int | None) -> torch.Tensor:
    """Per-pixel loss weights (B, 1, h, w) with the examples at timestep >= max_timestep set to 1
    (see BaseTrainConfig.object_loss_max_timestep); unchanged when max_timestep is None."""
    if max_timestep is None:
        return weights
    return torch.where((t < max_timestep).view(-1, 1, 1, 1), weights, torch.ones_like(weights))


def latent_object_masks(scenes, size: int) -> torch.Tensor:
    """(N, 1, size, size) 1 where a latent pixel's image patch touches an object, else 0."""
    masks = torch.from_numpy(np.stack([object_mask(sc) for sc in scenes]))[:, None]  # (N, 1, 128, 128)
    return touched_cells(masks, size)


@torch.no_grad()
def fixed_batch_loss(unet, te, tok, sched_cfg, pool, n: int = 16, seed: int = 123) -> float:
    """The denoising loss on a fixed batch (fixed scenes, captions, noise and timesteps): a
    comparable number before and after training, unlike the noisy per-step loss."""
    from diffusers import DDPMScheduler

    noise_sched = DDPMScheduler.from_config(sched_cfg)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    idx = [rng.randrange(len(pool["scenes"])) for _ in range(n)]
    x0 = pool["latents"][idx].float() * pool["scaling_factor"]  # (n, 4, h, w)
    ids = tokenize(tok, [fitting_caption(pool["scenes"][i], rng, tok) for i in idx])
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, noise_sched.config.num_train_timesteps, (n,), generator=gen)
    pred = unet(noise_sched.add_noise(x0, noise, t), t, te(ids).last_hidden_state).sample
    return float(F.mse_loss(pred, diffusion_target(noise_sched, x0, noise, t)))


def export_builtin(vae, unet, te, ema, scaling_factor: float, cfg: BaseTrainConfig, dest: Path, info: dict) -> None:
    """Phase 4: write the EMA weights (fp16 safetensors) as a diffusers folder at `dest`."""
    import shutil

    src = Path(cfg.config_dir)
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "TRAINING.json"))
    unet.load_state_dict(ema["unet"])
    te.load_state_dict(ema["te"])
    vae.register_to_config(scaling_factor=scaling_factor)
    for name, model in (("unet", unet), ("vae", vae)):
        model.to(torch.float16).save_pretrained(tmp / name, safe_serialization=True)
        model.to(torch.float32)
    te.to(torch.float16).save_pretrained(tmp / "text_encoder", safe_serialization=True)
    te.to(torch.float32)
    (tmp / "TRAINING.json").write_text(json.dumps(info, indent=2))
    if dest.exists():
        old = dest.with_name(dest.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        dest.replace(old)
        tmp.replace(dest)
        shutil.rmtree(old)
    else:
        tmp.replace(dest)


def _record_segment(out: Path, segment: dict) -> list[dict]:
    """Append this invocation's UNet steps and recipe to the run's history.json (which TRAINING.json
    copies), so an exported model says how every stretch of its training was done."""
    path = out / "history.json"
    history = json.loads(path.read_text()) if path.exists() else []
    if segment["to_step"] > segment["from_step"]:
        history.append(segment)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(history, indent=1))
        tmp.replace(path)
    return history


def _init_from(src: Path, cfg: BaseTrainConfig, out: Path, vae, unet, te) -> None:
    """Start a run from an exported model (e.g. the shipped built-in one): its text encoder and UNet
    are the UNet phase's starting weights on every invocation until that phase has a checkpoint of
    its own, and on the first invocation its VAE counts as trained."""
    from safetensors.torch import load_file

    def weights(folder: str) -> dict:
        file = next((src / folder).glob("*.safetensors"))
        return {k: v.float() for k, v in load_file(file).items()}

    if not (out / "unet.pt").exists():  # once it exists, train_unet resumes from it instead
        unet.load_state_dict(weights("unet"))
        te.load_state_dict(weights("text_encoder"))
    if not (out / "vae.pt").exists():
        vae.load_state_dict(weights("vae"))
        save_checkpoint({"model": vae.state_dict(), "step": cfg.vae_steps, "done": True}, out / "vae.pt")


def train_base(cfg: BaseTrainConfig, out: str | Path, export_to: str | Path | None = None, on_sample=None) -> dict:
    """Run (or resume) all phases within cfg.minutes; export when export_to is given."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    deadline = time.time() + cfg.minutes * 60
    torch.manual_seed(cfg.seed)
    vae, unet, te, tok, sched_cfg = _load_components(cfg)
    if cfg.init_from:  # also on a resume: one stopped before the UNet's first checkpoint starts from it again
        _init_from(Path(cfg.init_from), cfg, out, vae, unet, te)
    if not train_vae(vae, cfg, out, deadline):
        return {"phase": "vae", "done": False}
    if not train_decoder(vae, cfg, out, deadline):
        return {"phase": "decoder", "done": False}
    if not train_refine(vae, cfg, out, deadline):
        return {"phase": "refine", "done": False}
    vae.requires_grad_(False)
    pool = build_pool(vae, cfg, out)
    sample_modules = {"vae": vae, "tokenizer": tok, "scheduler_config": sched_cfg, "scaling_factor": pool["scaling_factor"]}
    ema, first, step = train_unet(unet, te, tok, sched_cfg, pool, cfg, out, deadline, on_sample, sample_modules)
    recipe = {"object_loss_weight": cfg.object_loss_weight, "layout_share": cfg.layout_share,
              "grounding_weight": cfg.grounding_weight, "lr": cfg.lr}
    if cfg.object_loss_max_timestep is not None:
        recipe["object_loss_max_timestep"] = cfg.object_loss_max_timestep
    if cfg.count_share:
        recipe["count_share"] = cfg.count_share
    if cfg.lr_decay_steps:
        recipe.update(lr_decay_start=cfg.lr_decay_start, lr_decay_steps=cfg.lr_decay_steps, lr_final_ratio=cfg.lr_final_ratio)
    info = {"unet_steps": step, "batch": cfg.batch, "vae_steps": cfg.vae_steps, "decoder_steps": cfg.decoder_steps,
            **({"vae_refine_steps": cfg.vae_refine_steps} if cfg.vae_refine_steps else {}), "pool_size": cfg.pool_size, **recipe,
            "scaling_factor": pool["scaling_factor"], "seed": cfg.seed, "init_from": cfg.init_from,
            "history": _record_segment(out, {"from_step": first, "to_step": step, **recipe})}
    if export_to:
        export_builtin(vae, unet, te, ema, pool["scaling_factor"], cfg, Path(export_to), info)
    return {"phase": "unet", "done": step >= cfg.max_steps, **info}
