"""What one exact proposal move costs against its number of candidates K, on the CPU or with the network on a GPU.

Loads an exported alanine dipeptide (vacuum) model and applies
``GenerativeProposal`` moves at 300 K to a chain that starts at the
model's reference configuration, for each K: seconds per move (best and
median of ``--moves``), of which drawing and scoring the K + 1 points
(``draw_and_score``) and the energies of the candidates
(``reduced_potentials``, OpenMM Reference platform, one thread), the
acceptance, the mean ESS / (K + 1) of the move's weights and the weighted
points per second that the waste-recycling estimator gets from them,
ESS / (seconds per move) (issue 17, 'budget shape': many cheap
proposals). Result: benchmarks/results/proposal_move_cost_<tag>.json.

python benchmarks/proposal_move_cost.py --model MODEL.pt --tag NAME [--device cuda] [--candidates 8 64 512] [--moves 5]
"""
import argparse
import os
import time

import numpy as np
import openmm
import torch
from openmm import unit
from openmmtools import cache, states, testsystems
from provenance import write_result  # noqa: E402  (benchmarks/, the script's directory)

from openmm_ddpm import load_exported_model
from openmm_ddpm.model.protocol import draw_and_score
from openmm_ddpm.moves.proposal import GenerativeProposal, reduced_potentials

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start


def move_costs(model, thermodynamic_state, start_positions, n_candidates, n_moves, seed):
    """One row: seconds per move and its parts, acceptance, ESS for K candidates."""
    proposal = GenerativeProposal(model, n_candidates, random_state=seed)
    sampler_state = states.SamplerState(unit.Quantity(start_positions, unit.nanometer))
    proposal.apply(thermodynamic_state, sampler_state)  # warm-up: contexts, kernels
    seconds, ess, accepted = [], [], []
    for _ in range(n_moves):
        _, t = timed(proposal.apply, thermodynamic_state, sampler_state)
        seconds.append(t)
        ess.append(proposal.last_outcome.ess_fraction * (n_candidates + 1))
        accepted.append(proposal.last_outcome.chosen > 0)
    current = sampler_state.positions.value_in_unit(unit.nanometer)
    (candidates, _, _), draw_seconds = timed(draw_and_score, model, n_candidates, thermodynamic_state.temperature, current,
                                             generator=torch.Generator().manual_seed(seed))
    _, energy_seconds = timed(reduced_potentials, thermodynamic_state, sampler_state, np.asarray(candidates, dtype=np.float64))
    median = float(np.median(seconds))
    return {"n_candidates": n_candidates, "moves": n_moves, "seconds_per_move_best": float(min(seconds)),
            "seconds_per_move_median": median, "draw_and_score_seconds": draw_seconds, "energies_seconds": energy_seconds,
            "acceptance": float(np.mean(accepted)), "mean_ess": float(np.mean(ess)),
            "mean_ess_fraction": float(np.mean(ess) / (n_candidates + 1)),
            "weighted_points_per_second": float(np.mean(ess) / median)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an exported alanine dipeptide vacuum model (.pt)")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--device", default="cpu", help="where the network runs: cpu or cuda")
    parser.add_argument("--candidates", type=int, nargs="+", default=[8, 64, 512])
    parser.add_argument("--moves", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cache.global_context_cache.set_platform(openmm.Platform.getPlatformByName("Reference"))
    system = testsystems.AlanineDipeptideVacuum(constraints=None).system
    model = load_exported_model(args.model, system, device=args.device)
    start_positions = torch.load(args.model, map_location="cpu", weights_only=True)["reference_positions"].numpy()
    thermodynamic_state = states.ThermodynamicState(system, 300.0 * unit.kelvin)
    rows = []
    for n_candidates in args.candidates:
        rows.append(move_costs(model, thermodynamic_state, start_positions, n_candidates, args.moves, args.seed))
        print(rows[-1], flush=True)
    write_result(os.path.join(HERE, "results", f"proposal_move_cost_{args.tag}.json"),
                 {"model": os.path.basename(args.model), "network": model.diffusion.network.config(),
                  "flow_steps": model.diffusion.settings.n_steps, "device": args.device, "rows": rows}, __file__, argv)


if __name__ == "__main__":
    main()
