"""The sampler table: names, aliases, errors, and that every sampler builds with the model's physics."""

import pytest

from egaku.engine.samplers import SamplerName, build_scheduler, get_sampler, list_samplers
from egaku.errors import InvalidRequestError
from egaku.models.tiny import SD_SCHEDULER

REQUIRED = ["Euler", "Euler a", "Heun", "DDIM", "DPM++ 2M", "DPM++ 2M Karras", "DPM++ SDE Karras", "UniPC", "LCM"]


def test_table_has_the_a1111_names_in_enum_order():
    names = [s.name for s in list_samplers()]
    assert names == [s.value for s in SamplerName]
    assert set(REQUIRED) <= set(names)


@pytest.mark.parametrize(
    "spelling, name",
    [("euler a", "Euler a"), ("k_euler_a", "Euler a"), ("K_DPMPP_2M", "DPM++ 2M"), ("dpm++ 2m karras", "DPM++ 2M Karras"),
     ("k_dpmpp_sde_ka", "DPM++ SDE Karras"), ("  UniPC ", "UniPC"), ("dpmpp-2m-sde", "DPM++ 2M SDE"), ("lcm", "LCM")],
)
def test_lookup_is_case_insensitive_with_aliases(spelling, name):
    assert get_sampler(spelling).name == name


def test_unknown_sampler_lists_the_choices():
    with pytest.raises(InvalidRequestError) as e:
        get_sampler("Eulerr")
    message = str(e.value)
    assert message.startswith("unknown sampler 'Eulerr'; choose one of: Euler, Euler a, ")
    assert "\n" not in message


@pytest.mark.parametrize(
    "name, cls, karras",
    [("Euler", "EulerDiscreteScheduler", False), ("Euler Karras", "EulerDiscreteScheduler", True),
     ("DPM++ 2M", "DPMSolverMultistepScheduler", False), ("DPM++ 2M Karras", "DPMSolverMultistepScheduler", True),
     ("DPM++ SDE Karras", "DPMSolverSDEScheduler", True), ("DPM++ 2S a", "DPMSolverSinglestepScheduler", False),
     ("DPM++ 2S a Karras", "DPMSolverSinglestepScheduler", True)],
)
def test_karras_variants(name, cls, karras):
    # a model config that asks for Karras sigmas must not leak into the plain sampler
    scheduler = build_scheduler(name, dict(SD_SCHEDULER, use_karras_sigmas=True))
    assert type(scheduler).__name__ == cls
    assert scheduler.config.use_karras_sigmas is karras


def test_model_physics_carry_over():
    config = dict(SD_SCHEDULER, prediction_type="v_prediction", beta_end=0.02)
    for info in list_samplers():
        scheduler = build_scheduler(info.name, config)
        assert scheduler.config.prediction_type == "v_prediction", info.name
        assert scheduler.config.beta_end == 0.02, info.name


def test_sde_and_ddim_options():
    assert build_scheduler("DPM++ 2M SDE", SD_SCHEDULER).config.algorithm_type == "sde-dpmsolver++"
    assert build_scheduler("k_dpmpp_2s_ancestral", SD_SCHEDULER).config.algorithm_type == "sde-dpmsolver++"
    ddim = build_scheduler("DDIM", SD_SCHEDULER)
    assert ddim.config.set_alpha_to_one is False and ddim.config.clip_sample is False


def test_lcm_step_limit():
    with pytest.raises(InvalidRequestError, match="LCM sampler takes at most 50 steps, got 60"):
        build_scheduler("LCM", SD_SCHEDULER, steps=60)
