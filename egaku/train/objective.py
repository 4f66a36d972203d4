"""The denoising objective shared by base training and fine-tuning: the target the UNet learns
(epsilon, or velocity for v-prediction, Salimans & Ho 2022) and Min-SNR-gamma loss weights
(Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy").

Both follow the model's own scheduler config, so a zero-terminal-SNR schedule (Lin et al. 2024)
works: SNR is 0 at its last timestep, where the paper's weights divide by zero (epsilon) or vanish
(v-prediction).
"""

from __future__ import annotations

import torch


def diffusion_target(scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to predict at (x_t, t): the noise, or the velocity for v-prediction."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    return noise


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """(B,) Min-SNR-gamma weights for per-sample MSE losses on the scheduler's prediction target.

    epsilon: min(SNR, gamma) / SNR, with SNR floored at 1e-8 so a zero-SNR timestep gets weight 1.
    v-prediction: (min(SNR, gamma) + 1) / (SNR + 1), the plain v loss wherever SNR <= gamma; the
    paper's min(SNR, gamma) / (SNR + 1) gives the zero-SNR timestep, where the image must come from
    the prompt alone, no weight at all.
    """
    ac = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    snr = ac / (1 - ac)
    if scheduler.config.prediction_type == "v_prediction":
        return (torch.clamp(snr, max=gamma) + 1) / (snr + 1)
    snr = torch.clamp(snr, min=1e-8)
    return torch.clamp(snr, max=gamma) / snr
