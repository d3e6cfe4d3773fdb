"""Does the held-solvent move pay? Alanine dipeptide in TIP3P water, new solute coordinates, the water held.

A solute model trained without explicit water (the frozen model of an
``alanine_vacuum_6_hbonds`` comparison run, constraints=HBonds, 48 free
coordinates) proposes at 300 K through ``HeldSolventModel`` in openmmtools'
AlanineDipeptideExplicit (HBonds, rigid TIP3P, PME; 2,269 atoms), K = 8
candidates per move, 1 ps of Langevin MD between moves. The same number of
moves of the same model on the same molecule in vacuum is the yardstick.
Reported per setting: acceptance, the share of moves skipped because the
current solute lies outside the model's support, mean ESS / (K + 1), the
reduced-energy gap u(candidate) - u(current) of every candidate and of the
best one, and the seconds per move.

python benchmarks/held_solvent_move.py --model compare_traces/alanine_vacuum_6_hbonds_augmented_seed0_model.pt
    [--moves 150] [--equilibration-ps 20]
"""
import argparse
import os
import time

import numpy as np
import openmm
import torch
from openmm import app, unit
from openmmtools import cache, states, testsystems
from provenance import write_result  # noqa: E402  (benchmarks/, the script's directory)

from openmm_ddpm import GenerativeProposal, load_exported_model
from openmm_ddpm.moves import HeldSolventModel, reduced_potentials

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPERATURE = 300.0 * unit.kelvin
N_SOLUTE = 22


def simulation_context(system, positions, platform, seed):
    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE, 1.0 / unit.picosecond, 2.0 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(system, integrator, platform, {"Threads": "1"} if platform.getName() == "CPU" else {})
    context.setPositions(positions)
    return context, integrator


def run_moves(model, system, positions, box, n_moves, equilibration_steps, seed):
    """Alternate 1 ps of MD and one move; the per-move record."""
    platform = openmm.Platform.getPlatformByName("CPU")
    context, integrator = simulation_context(system, positions, platform, seed)
    if box is not None:
        context.setPeriodicBoxVectors(*box)
    openmm.LocalEnergyMinimizer.minimize(context, maxIterations=500)
    context.setVelocitiesToTemperature(TEMPERATURE, seed)
    integrator.step(equilibration_steps)
    thermodynamic_state = states.ThermodynamicState(system, TEMPERATURE)
    energy_cache = cache.ContextCache(platform=platform, platform_properties={"Threads": "1"})
    proposal = GenerativeProposal(model, n_candidates=8, random_state=seed)
    records = {"accepted": [], "gaps": [], "ess_fraction": [], "seconds": [], "current_outside_support": []}
    for _ in range(n_moves):
        integrator.step(500)
        sampler_state = states.SamplerState.from_context(context)
        start = time.perf_counter()
        proposal.apply(thermodynamic_state, sampler_state, energy_cache)
        records["seconds"].append(time.perf_counter() - start)
        outcome = proposal.last_outcome
        gaps = np.full(proposal.n_candidates, np.nan)  # stays NaN where the current state is outside the support
        if len(outcome.configurations) > 1:
            reduced = reduced_potentials(thermodynamic_state, sampler_state, outcome.configurations, energy_cache)
            gaps = reduced[1:] - reduced[0]
        records["gaps"].append(gaps)
        records["current_outside_support"].append(len(outcome.configurations) == 1)
        records["accepted"].append(outcome.chosen > 0)
        records["ess_fraction"].append(outcome.ess_fraction)
        sampler_state.apply_to_context(context)
    return {key: np.asarray(value, dtype=float) for key, value in records.items()}


def summary(records):
    gaps = records["gaps"][np.isfinite(records["gaps"])]
    scored = np.isfinite(records["gaps"]).any(axis=1)
    best = np.nanmin(np.where(np.isfinite(records["gaps"][scored]), records["gaps"][scored], np.nan), axis=1)
    return {"moves": int(len(records["accepted"])), "acceptance": float(records["accepted"].mean()),
            "current_outside_support": float(records["current_outside_support"].mean()),
            "mean_ess_fraction": float(np.nanmean(records["ess_fraction"])) if scored.any() else None,
            "candidate_gap_kT_quantiles_10_50_90": np.percentile(gaps, [10, 50, 90]).tolist() if len(gaps) else None,
            "best_candidate_gap_kT_median": float(np.nanmedian(best)) if len(best) else None,
            "candidates_within_5kT_of_current": float(np.mean(gaps < 5.0)),
            "seconds_per_move": float(np.mean(records["seconds"]))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an exported HBonds alanine dipeptide model (*_model.pt)")
    parser.add_argument("--moves", type=int, default=150)
    parser.add_argument("--equilibration-ps", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    vacuum = testsystems.AlanineDipeptideVacuum(constraints=app.HBonds)
    solute_model = load_exported_model(args.model, vacuum.system)
    explicit = testsystems.AlanineDipeptideExplicit(constraints=app.HBonds)
    equilibration = int(args.equilibration_ps / 0.002)
    results = {}
    for name, system, positions, model in (
            ("vacuum", vacuum.system, vacuum.positions, solute_model),
            ("explicit_water_held", explicit.system, explicit.positions, HeldSolventModel(solute_model, range(N_SOLUTE)))):
        box = system.getDefaultPeriodicBoxVectors() if system.usesPeriodicBoundaryConditions() else None
        records = run_moves(model, system, positions, box, args.moves, equilibration, args.seed)
        results[name] = summary(records)
        print(name, results[name], flush=True)
    write_result(os.path.join(HERE, "results", "held_solvent_move_alanine_explicit.json"), {
        "model": os.path.basename(args.model), "temperature_kelvin": 300.0, "n_candidates": 8, "md_between_moves_ps": 1.0,
        "equilibration_ps": args.equilibration_ps, "atoms": {"vacuum": 22, "explicit": explicit.system.getNumParticles()},
        "results": results}, __file__, argv)


if __name__ == "__main__":
    main()
