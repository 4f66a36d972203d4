"""`egaku train base`: train the built-in model from scratch on the shapes world (resumable).
`egaku train lora|dreambooth|embedding|finetune`: fine-tune any model on your images (cli/finetune.py).

    egaku train base --out runs/base --minutes 120            # run again to resume
    egaku train base --out runs/base --minutes 0 --export egaku/models/builtin   # export only
    egaku train lora my_images/ --out runs/my-style
"""

from __future__ import annotations

import argparse
from pathlib import Path

from egaku.cli.common import note


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train models")
    sub = p.add_subparsers(title="what to train", dest="what", metavar="WHAT")
    p.set_defaults(run=None, parser=p)
    b = sub.add_parser("base", help="the built-in model, from scratch, on the shapes world (resumable)")
    b.add_argument("--out", type=Path, default=Path("runs/base"), help="run folder: checkpoints, logs, samples")
    b.add_argument("--minutes", type=float, default=120.0, help="wall-clock budget for this invocation")
    b.add_argument("--export", type=Path, metavar="DIR", help="write the trained model (diffusers folder) here")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--vae-steps", type=int, help="VAE steps (default 1200)")
    b.add_argument("--decoder-steps", type=int,
                   help="then fine-tune the VAE decoder alone for this many steps (latent space unchanged; default 0)")
    b.add_argument("--vae-refine-steps", type=int,
                   help="then refine the whole VAE on styled scenes, its latents anchored (default 0)")
    b.add_argument("--max-steps", type=int, help="stop the UNet phase after this many steps")
    b.add_argument("--pool-size", type=int, help="scenes encoded to latents once (default 24000)")
    b.add_argument("--batch", type=int, help="UNet batch size (default 32)")
    b.add_argument("--object-loss-weight", type=float,
                   help="loss weight of latent pixels that objects touch, against 1 for background (default 5)")
    b.add_argument("--object-loss-max-timestep", type=int, metavar="T",
                   help="that weight only below timestep T; noisier examples weigh every pixel alike, so the "
                        "model does not learn to draw extra objects (default: at every timestep)")
    b.add_argument("--layout-share", type=float,
                   help="share of each batch with captions that name positions and noisier timesteps (default 0)")
    b.add_argument("--count-share", type=float,
                   help="share of each batch on counting scenes captioned without positions (default 0)")
    b.add_argument("--lr-decay-steps", type=int,
                   help="cosine-decay the learning rate to a tenth over this many UNet steps (default 0: constant)")
    b.add_argument("--lr-decay-start", type=int, help="UNet step where that decay starts (default 0)")
    b.add_argument("--grounding-weight", type=float,
                   help="weight of the token-grounding loss on cross-attention (TokenCompose; default 0.1, 0: off)")
    b.add_argument("--sample-every", type=int, help="write a sample grid every N UNet steps (default 500)")
    b.add_argument("--config-dir", type=Path, help="diffusers folder whose configs define the model")
    b.add_argument("--init-from", type=Path, metavar="DIR",
                   help="start a new run from an exported model (its VAE is kept; UNet and text encoder train on)")
    b.set_defaults(run=run_base)

    from egaku.cli.finetune import register_methods

    register_methods(sub)


def run_base(args: argparse.Namespace) -> int:
    from egaku.train.base import BaseTrainConfig, train_base
    from egaku.train.samples import sample_grid_writer

    overrides = {
        "seed": args.seed,
        "minutes": args.minutes,
        "vae_steps": args.vae_steps,
        "decoder_steps": args.decoder_steps,
        "vae_refine_steps": args.vae_refine_steps,
        "max_steps": args.max_steps,
        "pool_size": args.pool_size,
        "batch": args.batch,
        "sample_every": args.sample_every,
        "object_loss_weight": args.object_loss_weight,
        "object_loss_max_timestep": args.object_loss_max_timestep,
        "layout_share": args.layout_share,
        "grounding_weight": args.grounding_weight,
        "count_share": args.count_share,
        "lr_decay_steps": args.lr_decay_steps,
        "lr_decay_start": args.lr_decay_start,
        "config_dir": str(args.config_dir) if args.config_dir else None,
        "init_from": str(args.init_from) if args.init_from else None,
    }
    cfg = BaseTrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    note(f"training the base model in {args.out} for up to {cfg.minutes:g} minutes (run again to resume)")
    result = train_base(cfg, args.out, export_to=args.export, on_sample=sample_grid_writer(args.out))
    if args.export and result.get("phase") == "unet":
        note(f"exported to {args.export}")
    note(f"stopped in phase {result['phase']} after {result.get('unet_steps', 0)} UNet steps")
    return 0
