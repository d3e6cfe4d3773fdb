"""``openmm-ddpm sample DIR --temperature 300K --region R --stratify``: a rare region weighed from its own model.

A run's model draws a rare region too seldom for its weight to be seen
(``--region`` prints the ESS inside it). Here the region gets its own data
and its own model, and every weight stays exact:

1. seeds: up to ``n_seeds`` of the run's stored frames inside the region (any state);
2. region MD: from each, 2 ps of relaxation then ``md_ps`` ps of Langevin
   dynamics at the temperature, a frame every ``stride`` steps; the frames
   still inside the region are the new model's data (not Boltzmann-weighted:
   the weights correct that exactly);
3. the region model: the run's settings and representation (fitted on the
   run's frames, so its domain covers what the run saw), a fresh network
   trained ``steps`` on those frames;
4. ``n_samples`` draws from each model with exact log q: the region's
   partition function from the region model's draws inside it, the rest's
   from the run's model's draws outside it (``analysis.stratified``).

A model of a basin needs ~16,000 frames of it to weigh it well
(benchmarks/basin_data_curve.py); on alanine dipeptide at 300 K this gave
dF(phi > 0) within 0.24 kT of the reference from 90 s of a plain run
(benchmarks/stratified_basin_sampling.py). Cut the region at barriers:
the region model must cover the whole region, edges included.
"""
import os
import time
from dataclasses import dataclass, field

import numpy as np

from openmm_ddpm.app.config import ConfigError, load_config
from openmm_ddpm.app.run import CONFIG_NAME, MODEL_NAME, build_system, choose_platform
from openmm_ddpm.app.sample import Samples, in_region, weighted_draws

REGION_MODEL_NAME = "region_model.pt"
RELAX_PS = 2.0
FEW_REGION_FRAMES = 4_000  # below this a model of one basin weighs it poorly (basin_data_curve: ESS < 1 % at 4,000)


@dataclass
class StratifiedSamples:
    """Draws of both models as one weighted sample of the whole ensemble, and what the region's estimate rests on.

    ``samples``: the region model's draws then the run model's, each weight exp(-u) / q of the model that drew
    it over that model's number of draws, and 0 outside its stratum (normalised weights: Boltzmann at the
    temperature); ``region`` / ``rest``: the ``StratumEstimate`` of each; ``population`` of the region with its
    delta-method ``population_error``; ``df_kt`` = -ln(Z_region / Z_rest) and ``df_error_kt``;
    ``region_frames``: the MD frames the region model learned from; ``seconds`` per step.
    """

    samples: Samples
    region: object
    rest: object
    population: float
    population_error: float
    df_kt: float
    df_error_kt: float
    region_frames: int
    region_model_path: str
    seconds: dict = field(default_factory=dict)


def region_md(system, seeds_nm, kelvin, md_ps, stride, seed, platform="auto"):
    """Frames (n, N, 3) nm of Langevin MD at ``kelvin`` from each seed (10/ps; 1 fs, 2 fs with constraints)."""
    import openmm
    from openmm import unit

    timestep = 2.0 if system.getNumConstraints() else 1.0
    integrator = openmm.LangevinMiddleIntegrator(kelvin * unit.kelvin, 10 / unit.picosecond, timestep * unit.femtosecond)
    integrator.setRandomNumberSeed(int(seed) + 1)
    context = openmm.Context(system, integrator, choose_platform(platform, system))
    rng = np.random.default_rng(seed)
    frames = []
    for x in seeds_nm:
        context.setPositions(x)
        context.applyConstraints(1e-6)
        context.setVelocitiesToTemperature(kelvin * unit.kelvin, int(rng.integers(1 << 30)))
        integrator.step(int(round(RELAX_PS * 1000 / timestep)))
        for _ in range(int(round(md_ps * 1000 / (timestep * stride)))):
            integrator.step(stride)
            frames.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return np.asarray(frames).reshape(-1, system.getNumParticles(), 3)


def train_region_model(settings, system, reference_nm, ladder, region_frames, kelvin, steps):
    """An ``OnlineLearner`` whose representation is fitted on the run's frames and whose network learned the region's."""
    import dataclasses

    from openmm_ddpm.multistate.buffer import ReplayBuffer
    from openmm_ddpm.multistate.learner import OnlineLearner

    n_run = ladder.positions.shape[0] * ladder.positions.shape[1]
    settings = dataclasses.replace(settings, training=dataclasses.replace(
        settings.training, min_buffer_frames=1, buffer_capacity=max(n_run, len(region_frames))))
    learner = OnlineLearner(settings, system, reference_nm)
    learner.prepare()
    for k, temperature in enumerate(ladder.temperatures_kelvin):
        learner.buffer.add(ladder.positions[:, k], temperature)
    learner.train()  # the representation's fit on every state's frames, the network's build and first round
    learner.buffer = ReplayBuffer(len(region_frames), system.getNumParticles())
    learner.buffer.add(region_frames, kelvin)
    learner.refine(int(steps))
    return learner


def region_frames(ladder, system, topology, region, kelvin, n_seeds, md_ps, stride, seed, platform):
    """MD frames at ``kelvin`` that stayed in ``region``, from up to ``n_seeds`` of the run's stored frames in it."""
    stored = ladder.positions.reshape(-1, *ladder.positions.shape[2:])
    inside = np.flatnonzero(in_region(stored, topology, region))
    if len(inside) == 0:
        raise ConfigError(f"--region {region.text}: no stored frame of the run lies in it, so there is nothing to seed "
                          "its MD from: run longer, or check the range")
    rng = np.random.default_rng(seed)
    seeds = stored[rng.choice(inside, min(n_seeds, len(inside)), replace=False)].astype(np.float64)
    frames = region_md(system, seeds, kelvin, md_ps, stride, seed, platform)
    frames = frames[in_region(frames, topology, region)]
    if len(frames) == 0:
        raise ConfigError(f"--region {region.text}: the MD left the region from every seed: is it a basin at "
                          f"{kelvin:g} K? (cut it at barriers)")
    return frames


def draw_stratum(model_path, system, temperature, n_samples, reference_nm, inside_of, seed):
    """One model's draws and their ``StratumEstimate``; ``inside_of(positions)`` marks the draws in its stratum.

    Returns (StratumEstimate, ``Samples`` whose log w is that of the combined sample: exp(-u) / q / n inside the
    stratum, -inf outside).
    """
    import dataclasses

    from openmm_ddpm.analysis import stratum_log_partition_function
    from openmm_ddpm.multistate import load_exported_model

    drawn = weighted_draws(load_exported_model(model_path, system), system, temperature, n_samples, reference_nm, seed)
    stratum = inside_of(drawn.positions)
    return (stratum_log_partition_function(drawn.log_weights, stratum),
            dataclasses.replace(drawn, log_weights=np.where(stratum, drawn.log_weights - np.log(n_samples), -np.inf)))


def stratified_draws(directory, temperature, region, n_samples, seed=0, n_seeds=32, md_ps=20.0, stride=40,
                     steps=20_000):
    """The ``StratifiedSamples`` of ``region`` (``sample.Region``) at ``temperature`` (Quantity) for a run directory."""
    from openmm import unit

    from openmm_ddpm.analysis import stratified_free_energy_difference_kt
    from openmm_ddpm.app.report import run_storage
    from openmm_ddpm.app.train import read_temperature_ladder, solute_columns
    from openmm_ddpm.moves.multiple_try import effective_sample_size
    from openmm_ddpm.multistate import export_proposal_model

    if solute_columns(directory) is not None:
        raise ConfigError("--stratify needs a model whose samples can be reweighted; this one is of the solute alone")
    kelvin = temperature.value_in_unit(unit.kelvin)
    config = load_config(os.path.join(directory, CONFIG_NAME))
    system, positions, topology = build_system(config.system)
    reference = positions.value_in_unit(unit.nanometer)
    clock = time.perf_counter()
    ladder = read_temperature_ladder(run_storage(directory)[0])
    frames = region_frames(ladder, system, topology, region, kelvin, n_seeds, md_ps, stride, seed, config.platform)
    seconds = {"region_md": time.perf_counter() - clock}
    learner = train_region_model(config.settings, system, reference, ladder, frames, kelvin, steps)
    region_model_path = os.path.join(directory, REGION_MODEL_NAME)
    export_proposal_model(learner, region_model_path, 0)
    seconds["region_model_training"] = time.perf_counter() - clock - seconds["region_md"]
    inside = draw_stratum(region_model_path, system, temperature, n_samples, reference,
                          lambda x: in_region(x, topology, region), seed + 1)
    outside = draw_stratum(os.path.join(directory, MODEL_NAME), system, temperature, n_samples, reference,
                           lambda x: ~in_region(x, topology, region) & np.all(np.isfinite(x), axis=(1, 2)), seed + 2)
    seconds["draws"] = time.perf_counter() - clock - sum(seconds.values())
    df, df_error = stratified_free_energy_difference_kt(inside[0], outside[0])
    population = float(1.0 / (1.0 + np.exp(df))) if np.isfinite(df) else float("nan")
    both = [inside[1], outside[1]]
    log_weights = np.concatenate([part.log_weights for part in both])
    samples = Samples(np.concatenate([part.positions for part in both]), log_weights,
                      np.concatenate([part.reduced_potentials for part in both]),
                      np.concatenate([part.log_q for part in both]), effective_sample_size(log_weights))
    return StratifiedSamples(samples, inside[0], outside[0], population,
                             float(population * (1.0 - population) * df_error), df, df_error, len(frames),
                             region_model_path, seconds)
