"""The shared denoising objective: targets and Min-SNR weights for epsilon and v-prediction models,
including zero-terminal-SNR schedules like the built-in model's."""

import torch
from diffusers import DDPMScheduler

from egaku.train.objective import diffusion_target, min_snr_weights

SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


def test_v_prediction_target_is_velocity_and_reconstructs_x0():
    sched = DDPMScheduler(**SD, prediction_type="v_prediction", rescale_betas_zero_snr=True)
    x0, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = torch.tensor([0, 500, 999])
    v = diffusion_target(sched, x0, noise, t)
    xt = sched.add_noise(x0, noise, t)
    a = sched.alphas_cumprod[t].sqrt()[:, None, None, None]
    s = (1 - sched.alphas_cumprod[t]).sqrt()[:, None, None, None]
    torch.testing.assert_close(a * xt - s * v, x0, atol=1e-5, rtol=1e-5)  # x0 = a x_t - s v
    # at zero terminal SNR x_t is pure noise, so the image can only come from the prompt
    torch.testing.assert_close(xt[2], noise[2])


def test_epsilon_target_is_the_noise():
    sched = DDPMScheduler(**SD)
    noise = torch.randn(2, 4, 8, 8)
    assert diffusion_target(sched, torch.randn(2, 4, 8, 8), noise, torch.tensor([10, 900])) is noise


def test_min_snr_weights_follow_the_paper_and_stay_finite_at_zero_snr():
    t = torch.tensor([0, 300, 999])
    eps = DDPMScheduler(**SD)
    ac = eps.alphas_cumprod[t]
    snr = ac / (1 - ac)
    torch.testing.assert_close(min_snr_weights(eps, t, 5.0), torch.clamp(snr, max=5.0) / snr)
    for prediction in ("epsilon", "v_prediction"):
        zsnr = DDPMScheduler(**SD, prediction_type=prediction, rescale_betas_zero_snr=True)
        w = min_snr_weights(zsnr, t, 5.0)
        assert torch.isfinite(w).all() and (w > 0).all(), prediction
        assert abs(float(w[2]) - 1.0) < 1e-6, prediction  # the zero-SNR step keeps full weight
        assert float(w[0]) < 0.01, prediction  # nearly clean steps are weighted down (SNR >> 5)
