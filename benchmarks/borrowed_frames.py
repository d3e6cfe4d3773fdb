"""Issue 17, model coverage: does training the target temperature's conditional also on frames borrowed from a
hotter replica, importance-resampled to the target, make the model cover phi > 0 there?

From a finished run's newest checkpoint (model and buffer), two arms refine the same model for ``--steps`` more
optimizer steps: ``plain`` on the buffer as it is, ``borrowed`` on the buffer plus as many frames again as the
target temperature has, drawn from each ``--source`` temperature's frames with probability proportional to
exp(-(1/kT_target - 1/kT_source) U) (sampling-importance-resampling; vacuum, so U is the whole energy). Then
importance sampling at the target from each refined model: ESS, ESS within phi > 0, the reweighted dF against the
reference. Training only changes: the move would stay exact with either model.

python benchmarks/borrowed_frames.py --storage RUN_DIR/run.nc [--sources 381.7] [--steps 10000] [--samples 4096]
Result: benchmarks/results/borrowed_frames.json
"""
import argparse
import os
import time

import numpy as np
import openmm
import torch
from openmm import unit
from openmmtools import cache, states
from provenance import write_result  # noqa: E402  (benchmarks/, the script's directory)
from remd_traces import phi_positive

from openmm_ddpm.analysis import generate_with_densities, population_free_energy_kt, reweighted_expectation
from openmm_ddpm.moves.multiple_try import effective_sample_size
from openmm_ddpm.moves.proposal import reduced_potentials
from openmm_ddpm.multistate import load_run
from openmm_ddpm.multistate.buffer import ReplayBuffer

HERE = os.path.dirname(os.path.abspath(__file__))


def borrowed_buffer(learner, sources, target_kelvin, rng, context_cache):
    """The buffer plus, per source temperature, n_target frames resampled to the target; and per source its ESS."""
    positions, temperatures = learner.buffer.arrays()
    at_target = np.isclose(temperatures, target_kelvin, atol=0.1)
    buffer = ReplayBuffer(capacity=len(positions) + len(sources) * int(at_target.sum()), n_atoms=positions.shape[1])
    for kelvin in np.unique(np.round(temperatures, 1)):
        buffer.add(positions[np.isclose(temperatures, kelvin, atol=0.1)], float(kelvin))
    state = states.ThermodynamicState(learner.system, target_kelvin * unit.kelvin)
    report = []
    for source in sources:
        pool = positions[np.isclose(temperatures, source, atol=0.2)]
        u_target = reduced_potentials(state, states.SamplerState(pool[0] * unit.nanometer), pool, context_cache)
        log_w = -u_target * (1.0 - target_kelvin / source)  # exp(-(b_target - b_source) U)
        weights = np.exp(log_w - log_w.max())
        weights /= weights.sum()
        draws = rng.choice(len(pool), size=int(at_target.sum()), p=weights)
        buffer.add(pool[draws], float(target_kelvin))
        report.append({"source_kelvin": source, "frames": len(pool), "ess": float(1.0 / np.sum(weights ** 2)),
                       "distinct_drawn": int(len(np.unique(draws))), "drawn": int(len(draws))})
    return buffer, report


def importance_sample(learner, target_kelvin, n_samples, seed):
    start = time.perf_counter()
    samples, reduced, log_q = generate_with_densities(learner.proposal_model, learner.system, target_kelvin * unit.kelvin,
                                                      n_samples, learner.reference_positions, batch_size=64, seed=seed)
    log_w = np.where(np.isfinite(log_q) & np.isfinite(reduced), -reduced - log_q, -np.inf)
    basin = phi_positive(samples)
    estimate = reweighted_expectation(log_w, basin)
    df, df_error = population_free_energy_kt(estimate.mean, estimate.error)
    return {"seconds": time.perf_counter() - start, "ess": estimate.ess,
            "ess_phi_positive": effective_sample_size(np.where(basin, log_w, -np.inf)),
            "drawn_phi_positive": float(basin.mean()), "p_phi_positive": estimate.mean, "p_error": estimate.error,
            "df_kT": df, "df_error_kT": df_error}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True, help="a finished openmm-ddpm run's run.nc")
    parser.add_argument("--sources", type=float, nargs="+", default=[381.7], help="K")
    parser.add_argument("--target", type=float, default=300.0, help="K")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reference-df", type=float, default=4.72, help="kT (compare_reference_alanine_vacuum.json)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    context_cache = cache.ContextCache(platform=openmm.Platform.getPlatformByName("Reference"))
    arms = {}
    for arm in ("plain", "borrowed"):
        learner = load_run(args.storage).learner  # the same checkpoint for both arms
        row = {}
        if arm == "borrowed":
            learner.buffer, row["sources"] = borrowed_buffer(learner, args.sources, args.target,
                                                             np.random.default_rng(args.seed), context_cache)
        start = time.perf_counter()
        learner.refine(args.steps)
        row["refine_seconds"] = time.perf_counter() - start
        row.update(importance_sample(learner, args.target, args.samples, args.seed))
        arms[arm] = row
        print(arm, {k: v for k, v in row.items() if k != "sources"}, flush=True)
    write_result(os.path.join(HERE, "results", "borrowed_frames.json"),
                 {"storage": args.storage, "target_kelvin": args.target, "reference_df_kT": args.reference_df,
                  "steps": args.steps, "samples": args.samples, "arms": arms}, __file__, argv)


if __name__ == "__main__":
    main()
