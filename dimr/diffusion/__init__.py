"""Diffusion math: schedules, noise, parametrisations, losses, guidance, samplers (each cites its paper).

Never imports `dimr.models`: the network is passed in as a callable `model(z, c_noise, y) -> list`.
"""

from dimr.diffusion.blurring import PROCESS_DEFAULTS, RelayProcess, blur, dct2, idct2, upsample_nearest
from dimr.diffusion.cascade import (
    CONDITION_DEFAULTS,
    CascadeObjective,
    ConcatCondition,
    low_resolution,
    upsample,
)
from dimr.diffusion.denoiser import Denoiser, GuidanceConfig, guidance_scale
from dimr.diffusion.losses import LOSSES, WEIGHTINGS, Loss, pool2d
from dimr.diffusion.noise import NOISES, block_noise, build_noise
from dimr.diffusion.objective import TIME_SAMPLINGS, DiffusionConfig, DiffusionObjective, build_objective
from dimr.diffusion.parametrization import PREDICTIONS, get_prediction
from dimr.diffusion.relay import (
    RelayDenoiser,
    RelayObjective,
    RelaySamplerConfig,
    relay_sigmas,
    sample_relay,
    sample_stage2,
)
from dimr.diffusion.samplers import SAMPLERS, SPACINGS, SamplerConfig, get_logsnrs, sample, sample_from_noise
from dimr.diffusion.schedules import C_NOISE, SCHEDULES, Schedule, alpha_sigma, build_schedule, get_c_noise

__all__ = [
    "CONDITION_DEFAULTS", "C_NOISE", "LOSSES", "NOISES", "PREDICTIONS", "PROCESS_DEFAULTS", "SAMPLERS",
    "SCHEDULES", "SPACINGS", "TIME_SAMPLINGS", "WEIGHTINGS", "CascadeObjective", "ConcatCondition",
    "Denoiser", "DiffusionConfig", "DiffusionObjective", "GuidanceConfig", "Loss", "RelayDenoiser",
    "RelayObjective", "RelayProcess", "RelaySamplerConfig", "SamplerConfig", "Schedule", "alpha_sigma",
    "block_noise", "blur", "build_noise", "build_objective", "build_schedule", "dct2", "get_c_noise",
    "get_logsnrs", "get_prediction", "guidance_scale", "idct2", "low_resolution", "pool2d", "relay_sigmas",
    "sample", "sample_from_noise", "sample_relay", "sample_stage2", "upsample", "upsample_nearest",
]
