"""The VAE phases of `egaku train base`: the whole AutoencoderKL on rendered scenes (L1 + MSE + a
tiny KL term, as LDM), then optionally the decoder alone on the frozen encoder's latents, then
optionally the whole VAE refined for the artists' textures with its latents anchored."""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from egaku.train.data import render_batch
from egaku.train.run_io import log_line, progress_bar, rng_from_list, rng_to_list, save_checkpoint

if TYPE_CHECKING:
    from egaku.train.base import BaseTrainConfig


def train_vae(vae, cfg: BaseTrainConfig, out: Path, deadline: float) -> bool:
    """Phase 1. Returns True when the VAE is fully trained."""
    ck = out / "vae.pt"
    state = torch.load(ck, weights_only=True) if ck.exists() else None
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    step = 0
    rng = random.Random(cfg.seed)
    if state:
        vae.load_state_dict(state["model"])
        step = state["step"]
        if step >= cfg.vae_steps:  # raise vae_steps to train the VAE further
            return True
        opt.load_state_dict(state["opt"])
        rng.setstate(rng_from_list(state["rng"]))
        torch.set_rng_state(state["torch_rng"])
    vae.train()

    def loss_of_batch() -> torch.Tensor:
        _, x = render_batch(rng, cfg.vae_batch)  # (B, 3, 128, 128)
        ox, oy = rng.randrange(0, 128 - cfg.vae_crop + 1, 8), rng.randrange(0, 128 - cfg.vae_crop + 1, 8)
        x = x[:, :, oy : oy + cfg.vae_crop, ox : ox + cfg.vae_crop]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        return reconstruction_loss(rec, x, cfg.vae_object_weight) + 1e-6 * post.kl().mean()

    def checkpoint(step: int, done: bool) -> None:
        save_checkpoint({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step,
                         "rng": rng_to_list(rng.getstate()), "torch_rng": torch.get_rng_state(), "done": done}, ck)

    step = _optimise("vae", loss_of_batch, opt, step, cfg.vae_steps, checkpoint, out, cfg, deadline)
    vae.eval()
    return step >= cfg.vae_steps


def train_decoder(vae, cfg: BaseTrainConfig, out: Path, deadline: float) -> bool:
    """Phase 1b: fine-tune the decoder alone on the frozen encoder's latents, as Stability's
    sd-vae-ft-mse did for SD's VAE. The latent space does not move, so the latent pool and a UNet
    trained on it stay valid: sharper shapes without retraining the UNet. The latents get a little
    Gaussian noise (`decoder_latent_noise` x their std), since the UNet's latents are never exact.
    Returns True when done (`decoder_steps` reached; 0 skips the phase)."""
    ck = out / "decoder.pt"
    state = torch.load(ck, weights_only=True) if ck.exists() else None
    vae_step = checkpoint_step(out / "vae.pt")
    if state and state["vae_step"] != vae_step:  # the VAE trained on since: fine-tune its decoder anew
        state = None
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.decoder_lr, weight_decay=0.0)
    step = 0
    rng = random.Random(cfg.seed + 3)
    if state:
        vae.load_state_dict(state["decoder"], strict=False)
        step = state["step"]
        opt.load_state_dict(state["opt"])
        rng.setstate(rng_from_list(state["rng"]))
        torch.set_rng_state(state["torch_rng"])
    if step >= cfg.decoder_steps:  # done, or skipped (0); raise decoder_steps to fine-tune further
        return True
    vae.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    vae.train()

    def loss_of_batch() -> torch.Tensor:
        _, x = render_batch(rng, cfg.vae_batch)  # (B, 3, 128, 128)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean  # (B, 4, 16, 16)
            z = z + cfg.decoder_latent_noise * z.std() * torch.randn_like(z)
        return reconstruction_loss(vae.decode(z).sample, x, cfg.vae_object_weight)

    def checkpoint(step: int, done: bool) -> None:
        decoder = {k: v for k, v in vae.state_dict().items() if k.startswith(("decoder.", "post_quant_conv."))}
        save_checkpoint({"decoder": decoder, "opt": opt.state_dict(), "step": step, "vae_step": vae_step,
                         "rng": rng_to_list(rng.getstate()), "torch_rng": torch.get_rng_state(), "done": done}, ck)

    step = _optimise("decoder", loss_of_batch, opt, step, cfg.decoder_steps, checkpoint, out, cfg, deadline)
    vae.eval()
    vae.requires_grad_(False)
    return step >= cfg.decoder_steps


# The refine phase. Styled scenes are oversampled: a texture (dots, stripes) covers a few percent of
# a scene's pixels, and at the world's own share the VAE learned to paint it as a flat mean colour
# (benchmarks/vae_readback.py: dots 0/26, stripes 3/28). An L1 loss on image gradients rewards the
# edges a mean colour lacks. The anchor keeps the latents near the refine's starting encoder, so a
# UNet trained on the old latents goes on from where it was instead of from scratch.
REFINE_STYLE_SHARE = 0.6
REFINE_GRADIENT_WEIGHT = 1.0
REFINE_ANCHOR_WEIGHT = 1.0


def train_refine(vae, cfg: BaseTrainConfig, out: Path, deadline: float) -> bool:
    """Phase 1c: the whole VAE, from where the phases before left it, on styled scenes with the
    gradient loss and the latent anchor (`REFINE_*`). Returns True when done (`vae_refine_steps`
    reached; 0 skips the phase)."""
    ck = out / "refine.pt"
    state = torch.load(ck, weights_only=True) if ck.exists() else None
    if cfg.vae_refine_steps == 0 and state is None:
        return True
    start = (checkpoint_step(out / "vae.pt"), checkpoint_step(out / "decoder.pt", 0))
    if state and tuple(state["start"]) != start:  # the phases before trained on since: refine anew
        state = None
    anchor = copy.deepcopy(vae.encoder), copy.deepcopy(vae.quant_conv)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.decoder_lr, weight_decay=0.0)
    step = 0
    rng = random.Random(cfg.seed + 5)
    if state:
        vae.load_state_dict(state["model"])
        anchor[0].load_state_dict(state["anchor_encoder"])
        anchor[1].load_state_dict(state["anchor_quant_conv"])
        step = state["step"]
        opt.load_state_dict(state["opt"])
        rng.setstate(rng_from_list(state["rng"]))
        torch.set_rng_state(state["torch_rng"])
    if step >= cfg.vae_refine_steps:
        return True
    for module in anchor:
        module.requires_grad_(False).eval()
    vae.requires_grad_(True)
    vae.train()

    def loss_of_batch() -> torch.Tensor:
        _, x = render_batch(rng, cfg.vae_batch, REFINE_STYLE_SHARE)  # (B, 3, 128, 128)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        with torch.no_grad():
            target = torch.chunk(anchor[1](anchor[0](x)), 2, dim=1)[0]  # the anchor's posterior mean
        return (reconstruction_loss(rec, x, cfg.vae_object_weight)
                + REFINE_GRADIENT_WEIGHT * gradient_loss(rec, x, cfg.vae_object_weight)
                + REFINE_ANCHOR_WEIGHT * F.mse_loss(post.mean, target) + 1e-6 * post.kl().mean())

    def checkpoint(step: int, done: bool) -> None:
        save_checkpoint({"model": vae.state_dict(), "anchor_encoder": anchor[0].state_dict(),
                         "anchor_quant_conv": anchor[1].state_dict(), "opt": opt.state_dict(), "step": step,
                         "start": list(start), "rng": rng_to_list(rng.getstate()),
                         "torch_rng": torch.get_rng_state(), "done": done}, ck)

    step = _optimise("refine", loss_of_batch, opt, step, cfg.vae_refine_steps, checkpoint, out, cfg, deadline)
    vae.eval()
    vae.requires_grad_(False)
    return step >= cfg.vae_refine_steps


def encoder_tag(out: Path) -> list[int]:
    """Which encoder a run folder's latents come from: the VAE phase's step and the refine phase's
    (the decoder phase leaves the encoder as it is)."""
    tag = [checkpoint_step(out / "vae.pt", -1)]
    if (out / "refine.pt").exists():
        tag.append(checkpoint_step(out / "refine.pt"))
    return tag


def checkpoint_step(path: Path, missing: int | None = None) -> int:
    """The step a phase's checkpoint reached; `missing` if there is none (None: it must exist)."""
    if missing is not None and not path.exists():
        return missing
    return torch.load(path, weights_only=True)["step"]


def _optimise(phase: str, loss_of_batch, opt, step: int, total: int, checkpoint, out: Path, cfg: BaseTrainConfig,
              deadline: float) -> int:
    """The loop both VAE phases share: optimise until `total` steps or the deadline, log every 50
    steps, checkpoint every `cfg.checkpoint_minutes` and at the end. Returns the step reached."""
    last_ck = time.time()
    bar = progress_bar(phase, total, step)
    while step < total and time.time() < deadline:
        loss = loss_of_batch()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        if step % 50 == 0:
            log_line(out, phase=phase, step=step, loss=float(loss.detach()))
        if time.time() - last_ck > cfg.checkpoint_minutes * 60:
            checkpoint(step, False)
            last_ck = time.time()
    bar.close()
    checkpoint(step, step >= total)
    return step


def reconstruction_loss(rec: torch.Tensor, x: torch.Tensor, object_weight: float) -> torch.Tensor:
    """L1 + MSE with object pixels weighted (1 + object_weight)x: objects cover a small part of each
    image, and unweighted the VAE learns the background and blurs the shapes away."""
    weight = 1.0 + object_weight * foreground_mask(x)  # (B, 1, H, W)
    err = (rec - x).abs() + (rec - x) ** 2  # (B, 3, H, W)
    return (err * weight).mean() / weight.mean()


def gradient_loss(rec: torch.Tensor, x: torch.Tensor, object_weight: float) -> torch.Tensor:
    """L1 between the horizontal and vertical pixel differences of `rec` and `x`, object pixels
    weighted as in `reconstruction_loss`: a texture painted as its mean colour has no edges."""
    weight = 1.0 + object_weight * foreground_mask(x)  # (B, 1, H, W)
    loss = 0.0
    for dim in (2, 3):
        d_rec, d_x = rec.diff(dim=dim), x.diff(dim=dim)
        w = weight.narrow(dim, 0, weight.shape[dim] - 1)
        loss = loss + ((d_rec - d_x).abs() * w).mean() / w.mean()
    return loss


def foreground_mask(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) 1 where a pixel differs from its image's background (the per-image median colour)."""
    bg = x.flatten(2).median(dim=2).values[..., None, None]  # (B, 3, 1, 1)
    return ((x - bg).abs().sum(dim=1, keepdim=True) > 0.15).float()
