"""Diffusion math: schedules, noise, parametrisations, losses, guidance, samplers (each cites its paper).

Never imports `dimr.models`: the network is passed in as a callable `model(z, c_noise, y) -> list`.
"""

from dimr.diffusion.denoiser import Denoiser, GuidanceConfig, guidance_scale
from dimr.diffusion.losses import LOSSES, WEIGHTINGS, Loss, pool2d
from dimr.diffusion.noise import NOISES, block_noise, build_noise
from dimr.diffusion.objective import TIME_SAMPLINGS, DiffusionConfig, DiffusionObjective
from dimr.diffusion.parametrization import PREDICTIONS, get_prediction
from dimr.diffusion.samplers import SAMPLERS, SPACINGS, SamplerConfig, get_logsnrs, sample, sample_from_noise
from dimr.diffusion.schedules import C_NOISE, SCHEDULES, Schedule, alpha_sigma, build_schedule, get_c_noise

__all__ = [
    "C_NOISE", "LOSSES", "NOISES", "PREDICTIONS", "SAMPLERS", "SCHEDULES", "SPACINGS", "TIME_SAMPLINGS",
    "WEIGHTINGS", "Denoiser", "DiffusionConfig", "DiffusionObjective", "GuidanceConfig", "Loss",
    "SamplerConfig", "Schedule", "alpha_sigma", "block_noise", "build_noise", "build_schedule",
    "get_c_noise", "get_logsnrs", "get_prediction", "guidance_scale", "pool2d", "sample", "sample_from_noise",
]
