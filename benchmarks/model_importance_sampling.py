"""Importance sampling straight from a frozen model, at simulated and never-simulated temperatures.

Draws ``--samples`` configurations of alanine dipeptide (vacuum) from an
exported model at each temperature with their exact log q (accumulated
along the flow map, ``generate_with_densities``), weighs them by
exp(-u_T) / q, and reports per temperature: the ESS fraction (Kish), the
reweighted P(phi > 0) and dF with the delta-method error (Owen 2013, eq.
9.9), the fraction of draws outside the support, the seconds per sample
(one thread), and the wall time the same error would take at 0.2 kT,
extrapolated as t (error / 0.2)^2: the cost of a new temperature once the
model is trained (issue 17, 'importance sampling directly from the frozen
model'). The model comes from a finished run or from ``compare_remd.py``'s
traces (``*_model.pt``). Result: benchmarks/results/model_importance_sampling_<tag>.json.

python benchmarks/model_importance_sampling.py --model MODEL.pt --tag NAME [--temperatures 300 350] [--samples 2048]
    [--device cuda] [--batch-size 64]
"""
import argparse
import os
import time

import numpy as np
import torch
from openmm import unit
from openmmtools import testsystems
from provenance import write_result  # noqa: E402  (benchmarks/, the script's directory)

from openmm_ddpm import load_exported_model
from openmm_ddpm.analysis import generate_with_densities, population_free_energy_kt, reweighted_expectation
from remd_traces import phi_positive

HERE = os.path.dirname(os.path.abspath(__file__))


def importance_sample(model, system, reference_positions, kelvin, n_samples, seed, target_kelvin=None, batch_size=64):
    """Draws from the model at ``kelvin``, weighted to ``target_kelvin`` (default: the same): P(phi > 0), dF, ESS, time.

    In vacuum the reduced potential is U / kT, so u_target = u_T T / T_target.
    """
    target_kelvin = kelvin if target_kelvin is None else target_kelvin
    start = time.perf_counter()
    positions, reduced, log_q = generate_with_densities(model, system, kelvin * unit.kelvin, n_samples,
                                                        reference_positions, batch_size=batch_size, seed=seed)
    seconds = time.perf_counter() - start
    log_weights = -reduced * (kelvin / target_kelvin) - log_q
    finite = np.isfinite(log_weights)
    basin = phi_positive(positions)
    estimate = reweighted_expectation(np.where(finite, log_weights, -np.inf), basin)
    df, df_error = population_free_energy_kt(estimate.mean, estimate.error)
    per_basin = {f"ess_{name}": reweighted_expectation(np.where(finite & mask, log_weights, -np.inf), basin).ess
                 for name, mask in (("phi_positive", basin), ("phi_negative", ~basin))}
    return {"temperature_kelvin": kelvin, "target_temperature_kelvin": target_kelvin, "samples": n_samples, **per_basin, "seconds": seconds, "samples_per_second": n_samples / seconds,
            "ess": estimate.ess, "ess_fraction": estimate.ess / n_samples, "outside_support_fraction": float(1 - finite.mean()),
            "p_phi_positive": estimate.mean, "p_error": estimate.error, "df_kT": df, "df_error_kT": df_error,
            "unweighted_p_phi_positive": float(phi_positive(positions[finite]).mean()) if finite.any() else None,
            "seconds_to_0.2kT_extrapolated": seconds * (df_error / 0.2) ** 2 if np.isfinite(df_error) else None}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an exported alanine dipeptide vacuum model (.pt)")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 350.0], help="K")
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="where the network runs: cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=64, help="draws per network batch")
    parser.add_argument("--target", type=float, default=None,
                        help="K: weight every temperature's draws to this one (default: each to its own)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    system = testsystems.AlanineDipeptideVacuum(constraints=None).system
    model = load_exported_model(args.model, system, device=args.device)
    reference_positions = torch.load(args.model, map_location="cpu", weights_only=True)["reference_positions"].numpy()
    rows = []
    for i, kelvin in enumerate(args.temperatures):
        rows.append(importance_sample(model, system, reference_positions, kelvin, args.samples, args.seed + i, args.target,
                                      args.batch_size))
        print({key: rows[-1][key] for key in ("temperature_kelvin", "target_temperature_kelvin", "ess_fraction",
                                              "ess_phi_positive", "ess_phi_negative", "df_kT", "df_error_kT",
                                              "samples_per_second", "seconds_to_0.2kT_extrapolated")}, flush=True)
    write_result(os.path.join(HERE, "results", f"model_importance_sampling_{args.tag}.json"),
                 {"model": os.path.basename(args.model), "network": model.diffusion.network.config(),
                  "flow_steps": model.diffusion.settings.n_steps, "rows": rows}, __file__, argv)


if __name__ == "__main__":
    main()
