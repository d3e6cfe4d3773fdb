"""Benchmark: an exported alanine dipeptide (vacuum) model's reweighted P(phi > 0) at several temperatures and seeds.

A self-normalised importance-sampling estimate whose proposal under-represents
a basin can look right with one seed and be far off with another (a few large
weights carry it); repeating it over seeds shows whether a model reweights a
temperature robustly. Each spec is KELVIN:N_SAMPLES:SEED.

With ``--run STORAGE --first-iteration N`` (the run that trained the model,
N one after its freeze), each spec also gets the pooled estimate: the run's
production samples and the model samples together by MBAR, the model as one
more state (``openmm_ddpm.analysis.reweight_run_with_model``).

python benchmarks/alanine_dipeptide_reweighting_seeds.py --model MODEL.pt --tag NAME 381.67789096181775:768:1 300:2048:0

Writes benchmarks/results/alanine_dipeptide_reweighting_seeds_<NAME>.json.
"""
import argparse
import dataclasses
import json
import os
import time

import numpy as np
import torch
from openmm import unit
from openmmtools import testsystems
from provenance import command_line, write_result  # noqa: E402  (benchmarks/, the script's directory)

from openmm_ddpm.analysis import (
    backbone_dihedrals,
    generate_with_densities,
    reweight_run_with_model,
    reweighted_expectation,
)
from openmm_ddpm.multistate import load_exported_model

HERE = os.path.dirname(os.path.abspath(__file__))


def reweighted_population(model, molecule, reference_positions, kelvin, n_samples, seed):
    """P(phi > 0) at ``kelvin`` from ``n_samples`` model samples, with error, ESS and basin counts; and the samples."""
    start = time.perf_counter()
    samples = generate_with_densities(model, molecule.system, kelvin * unit.kelvin, n_samples, reference_positions,
                                      batch_size=128, seed=seed)
    positions, u, log_q = samples
    log_w = -u - log_q
    finite = np.isfinite(log_w)
    phi = np.degrees(np.nan_to_num(backbone_dihedrals(positions, molecule.topology)[0][:, 0]))
    estimate = reweighted_expectation(log_w, (phi > 0).astype(float))
    p, p_error, ess = estimate.mean, estimate.error, estimate.ess
    return dict(kelvin=kelvin, n=n_samples, seed=seed, p=p, p_error=p_error, ess=ess,
                outside=float(1 - finite.mean()), n_phi_positive=int(((phi > 0) & finite).sum()),
                n_alpha_l=int(((phi > 0) & (phi < 120) & finite).sum()),
                seconds=round(time.perf_counter() - start)), samples


def pooled_population(model, molecule, reference_positions, kelvin, samples, seed, storage, first_iteration):
    """P(phi > 0) at ``kelvin`` from the run's production samples and the given model samples, pooled by MBAR."""
    start = time.perf_counter()

    def phi_positive(positions):
        return np.nan_to_num(backbone_dihedrals(positions, molecule.topology)[0][:, 0]) > 0

    result = reweight_run_with_model(storage, model, molecule.system, first_iteration, kelvin * unit.kelvin, samples,
                                     phi_positive, reference_positions, seed=seed, batch_size=128)
    return {"pooled_" + key: value for key, value in dataclasses.asdict(result).items()} | {"pooled_seconds": round(time.perf_counter() - start)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a file of export_proposal_model (vacuum)")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--run", help="storage of the run that trained the model: adds the pooled estimate")
    parser.add_argument("--first-iteration", type=int, help="with --run: first production iteration (freeze + 1)")
    parser.add_argument("specs", nargs="+", help="KELVIN:N_SAMPLES:SEED")
    args = parser.parse_args(argv)
    if (args.run is None) != (args.first_iteration is None):
        parser.error("--run and --first-iteration go together")
    torch.set_num_threads(1)
    molecule = testsystems.AlanineDipeptideVacuum(constraints=None)
    model = load_exported_model(args.model, molecule.system)
    reference_positions = torch.load(args.model, map_location="cpu", weights_only=True)["reference_positions"].numpy()
    rows = []
    for spec in args.specs:
        kelvin, n_samples, seed = spec.split(":")
        row, samples = reweighted_population(model, molecule, reference_positions, float(kelvin), int(n_samples),
                                             int(seed))
        if args.run is not None:
            row.update(pooled_population(model, molecule, reference_positions, float(kelvin), samples, int(seed),
                                         args.run, args.first_iteration))
        rows.append(row)
        print(json.dumps(rows[-1]), flush=True)
    result = {"command": command_line(__file__, argv),
              "rows": rows}
    output = os.path.join(HERE, "results", f"alanine_dipeptide_reweighting_seeds_{args.tag}.json")
    write_result(output, result)


if __name__ == "__main__":
    main()
