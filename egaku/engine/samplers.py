"""Sampler names as A1111 users know them, mapped to diffusers schedulers: one table, one place.

The mapping follows diffusers' own "A1111 / k-diffusion equivalents" table (e.g. "DPM++ 2M Karras" is
`DPMSolverMultistepScheduler(use_karras_sigmas=True)`). Each scheduler is built from the physics of
the model being used (betas, prediction_type, timestep spacing from the bundle's scheduler_config)
plus the sampler's own options, so a v-prediction SD 2 model gets v-prediction DPM++ and so on.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch

from egaku.errors import InvalidRequestError


class SamplerName(StrEnum):
    """The closed set of samplers egaku offers, spelled exactly as A1111 shows them."""

    EULER = "Euler"
    EULER_A = "Euler a"
    EULER_KARRAS = "Euler Karras"
    HEUN = "Heun"
    LMS = "LMS"
    LMS_KARRAS = "LMS Karras"
    DPM2 = "DPM2"
    DPM2_KARRAS = "DPM2 Karras"
    DPM2_A = "DPM2 a"
    DPM2_A_KARRAS = "DPM2 a Karras"
    DPMPP_2S_A = "DPM++ 2S a"
    DPMPP_2S_A_KARRAS = "DPM++ 2S a Karras"
    DPMPP_2M = "DPM++ 2M"
    DPMPP_2M_KARRAS = "DPM++ 2M Karras"
    DPMPP_2M_SDE = "DPM++ 2M SDE"
    DPMPP_2M_SDE_KARRAS = "DPM++ 2M SDE Karras"
    DPMPP_SDE = "DPM++ SDE"
    DPMPP_SDE_KARRAS = "DPM++ SDE Karras"
    DDIM = "DDIM"
    DDPM = "DDPM"
    PLMS = "PLMS"
    UNIPC = "UniPC"
    DEIS = "DEIS"
    LCM = "LCM"


@dataclass(frozen=True)
class SamplerInfo:
    """One row of the sampler table."""

    name: str  # A1111 display name
    scheduler: str  # diffusers scheduler class name
    aliases: tuple[str, ...]  # other spellings accepted (A1111 API k_* names, ComfyUI names)
    description: str  # one line, with the paper it follows
    kwargs: dict = field(default_factory=dict)  # scheduler options on top of the model's physics


_KARRAS = {"use_karras_sigmas": True}
_SDE_2M = {"algorithm_type": "sde-dpmsolver++"}

_TABLE: tuple[SamplerInfo, ...] = (
    SamplerInfo("Euler", "EulerDiscreteScheduler", ("k_euler", "euler"),
                "Euler method on the probability-flow ODE (Karras et al. 2022, Alg. 1)"),
    SamplerInfo("Euler a", "EulerAncestralDiscreteScheduler", ("k_euler_a", "euler_ancestral", "euler_a"),
                "Euler with ancestral noise (k-diffusion sample_euler_ancestral); stochastic"),
    SamplerInfo("Euler Karras", "EulerDiscreteScheduler", ("k_euler_ka", "euler_karras"),
                "Euler with the Karras et al. 2022 noise schedule", _KARRAS),
    SamplerInfo("Heun", "HeunDiscreteScheduler", ("k_heun", "heun"),
                "Heun's 2nd-order method (Karras et al. 2022, Alg. 1); two UNet calls per step"),
    SamplerInfo("LMS", "LMSDiscreteScheduler", ("k_lms", "lms"),
                "linear multistep (k-diffusion sample_lms)"),
    SamplerInfo("LMS Karras", "LMSDiscreteScheduler", ("k_lms_ka", "lms_karras"),
                "linear multistep with the Karras noise schedule", _KARRAS),
    SamplerInfo("DPM2", "KDPM2DiscreteScheduler", ("k_dpm_2", "dpm_2", "dpm2"),
                "DPM-Solver-2 (Lu et al. 2022) as in k-diffusion sample_dpm_2"),
    SamplerInfo("DPM2 Karras", "KDPM2DiscreteScheduler", ("k_dpm_2_ka", "dpm_2_karras"),
                "DPM-Solver-2 with the Karras noise schedule", _KARRAS),
    SamplerInfo("DPM2 a", "KDPM2AncestralDiscreteScheduler", ("k_dpm_2_a", "dpm_2_ancestral"),
                "DPM-Solver-2 with ancestral noise; stochastic"),
    SamplerInfo("DPM2 a Karras", "KDPM2AncestralDiscreteScheduler", ("k_dpm_2_a_ka", "dpm_2_ancestral_karras"),
                "DPM-Solver-2 ancestral with the Karras noise schedule", _KARRAS),
    SamplerInfo("DPM++ 2S a", "DPMSolverSinglestepScheduler", ("k_dpmpp_2s_a", "dpmpp_2s_ancestral", "k_dpmpp_2s_ancestral"),
                "singlestep 2nd-order SDE DPM-Solver++ (Lu et al. 2022b), diffusers' counterpart of k-diffusion "
                "sample_dpmpp_2s_ancestral (one UNet call per step where k-diffusion makes two); stochastic", _SDE_2M),
    SamplerInfo("DPM++ 2S a Karras", "DPMSolverSinglestepScheduler", ("k_dpmpp_2s_a_ka", "dpmpp_2s_ancestral_karras"),
                "DPM++ 2S a with the Karras noise schedule; stochastic", {**_SDE_2M, **_KARRAS}),
    SamplerInfo("DPM++ 2M", "DPMSolverMultistepScheduler", ("k_dpmpp_2m", "dpmpp_2m"),
                "DPM-Solver++(2M) multistep (Lu et al. 2022b)"),
    SamplerInfo("DPM++ 2M Karras", "DPMSolverMultistepScheduler", ("k_dpmpp_2m_ka", "dpmpp_2m_karras"),
                "DPM-Solver++(2M) with the Karras noise schedule", _KARRAS),
    SamplerInfo("DPM++ 2M SDE", "DPMSolverMultistepScheduler", ("k_dpmpp_2m_sde", "dpmpp_2m_sde"),
                "SDE variant of DPM-Solver++(2M); stochastic", _SDE_2M),
    SamplerInfo("DPM++ 2M SDE Karras", "DPMSolverMultistepScheduler", ("k_dpmpp_2m_sde_ka", "dpmpp_2m_sde_karras"),
                "SDE DPM-Solver++(2M) with the Karras noise schedule; stochastic", {**_SDE_2M, **_KARRAS}),
    SamplerInfo("DPM++ SDE", "DPMSolverSDEScheduler", ("k_dpmpp_sde", "dpmpp_sde"),
                "DPM-Solver++ SDE with Brownian-tree noise (k-diffusion sample_dpmpp_sde); stochastic"),
    SamplerInfo("DPM++ SDE Karras", "DPMSolverSDEScheduler", ("k_dpmpp_sde_ka", "dpmpp_sde_karras"),
                "DPM-Solver++ SDE with the Karras noise schedule; stochastic", _KARRAS),
    SamplerInfo("DDIM", "DDIMScheduler", ("ddim",),
                "denoising diffusion implicit models, eta 0 (Song et al. 2020)",
                {"clip_sample": False, "set_alpha_to_one": False}),
    SamplerInfo("DDPM", "DDPMScheduler", ("ddpm",),
                "ancestral sampling of denoising diffusion probabilistic models (Ho et al. 2020); stochastic",
                {"clip_sample": False}),
    SamplerInfo("PLMS", "PNDMScheduler", ("plms", "pndm"),
                "pseudo linear multistep (Liu et al. 2022), as the original SD scripts' PLMS",
                {"skip_prk_steps": True, "set_alpha_to_one": False}),
    SamplerInfo("UniPC", "UniPCMultistepScheduler", ("unipc", "uni_pc"),
                "unified predictor-corrector (Zhao et al. 2023)"),
    SamplerInfo("DEIS", "DEISMultistepScheduler", ("deis",),
                "diffusion exponential integrator sampler (Zhang & Chen 2022)"),
    SamplerInfo("LCM", "LCMScheduler", ("lcm",),
                "latent consistency model sampling (Luo et al. 2023); for LCM-distilled models or LoRAs"),
)

# Only the model's physics is taken from its scheduler_config; sampler options come from the table.
_MODEL_KEYS = (
    "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
    "prediction_type", "steps_offset", "timestep_spacing", "rescale_betas_zero_snr",
)
_SIGMA_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
LCM_MAX_STEPS = 50  # LCMScheduler's original_inference_steps


def _key(name: str) -> str:
    """Lookup key: case-insensitive, with '-', '_' and runs of spaces treated alike."""
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def _index() -> dict[str, SamplerInfo]:
    index: dict[str, SamplerInfo] = {}
    for info in _TABLE:
        for spelling in (info.name, *info.aliases):
            index[_key(spelling)] = info
    return index


def list_samplers() -> list[SamplerInfo]:
    """Every sampler, in the order A1111 lists them."""
    return list(_TABLE)


def get_sampler(name: str) -> SamplerInfo:
    """The sampler called `name` (any case, or an alias like k_euler_a); InvalidRequestError if unknown."""
    info = _index().get(_key(str(name)))
    if info is None:
        names = ", ".join(s.name for s in _TABLE)
        raise InvalidRequestError(f"unknown sampler '{name}'; choose one of: {names}")
    return info


def check_steps(name: str, steps: int) -> SamplerInfo:
    """The sampler, if it can take `steps` steps (LCM's timesteps come from 50 original ones)."""
    info = get_sampler(name)
    if info.scheduler == "LCMScheduler" and steps > LCM_MAX_STEPS:
        raise InvalidRequestError(f"the LCM sampler takes at most {LCM_MAX_STEPS} steps, got {steps}")
    return info


def build_scheduler(name: str, scheduler_config: dict, *, steps: int | None = None):
    """A fresh diffusers scheduler for sampler `name` with the model's betas and prediction type."""
    import diffusers

    info = get_sampler(name) if steps is None else check_steps(name, steps)
    cls = getattr(diffusers, info.scheduler)
    accepted = inspect.signature(cls.__init__).parameters
    config = {k: scheduler_config[k] for k in _MODEL_KEYS if k in scheduler_config and k in accepted}
    config.update({flag: False for flag in _SIGMA_FLAGS if flag in accepted})
    config.update(info.kwargs)
    return cls(**config)


def step_kwargs(scheduler, generators: list[torch.Generator]) -> dict[str, Any]:
    """Extra arguments for `scheduler.step` so stochastic samplers draw image i's noise from generator i.

    Ancestral and SDE samplers take per-image CPU generators (diffusers' randn_tensor draws one slice
    per generator), so image i of a batch is the same as image i generated alone. DPMSolverSDE draws
    from Brownian trees instead; it gets one tree seed per image, drawn from that image's generator.
    """
    if hasattr(scheduler, "noise_sampler_seed"):
        scheduler.noise_sampler_seed = [
            int(torch.randint(0, 2**63 - 1, (1,), generator=g).item()) for g in generators
        ]
        scheduler.noise_sampler = None
    if "generator" in inspect.signature(scheduler.step).parameters:
        return {"generator": generators}
    return {}
