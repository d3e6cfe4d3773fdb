"""A rare basin at 300 K by stratified importance sampling, against plain PT on the same clock (issue 17).

Every model lever at fixed data left the 300 K phi > 0 basin of alanine dipeptide unusable, and
``basin_data_curve.py`` says why: a model needs ~16k frames of a basin to weigh it well, and a
5-minute plain run holds ~2k frames of phi > 0 over all its states (31 at 300 K). This pipeline
gives the rare basin its own model and its own data, and keeps every weight exact:

1. data: the frames of the first ``--data-seconds`` of a plain PT run (``offline_model_levers.py
   simulate``, whose wall.npy says where to cut);
2. the ladder model: a fresh default model (128 x 2, 10 flow steps) trained ``--steps`` on them
   (the package's denoising score matching);
3. basin MD: ``--seeds`` frames with phi > 0 (from any state), each relaxed 2 ps and run
   ``--md-ps`` ps at 300 K (Langevin, 10/ps, 1 fs), a frame every ``--stride`` steps; the
   frames still in phi > 0 are the basin's training data (not Boltzmann-weighted: no matter);
4. the basin model: a fresh default model trained ``--steps`` on them;
5. ``--samples`` draws at 300 K from each model with exact log q. Z+ = mean over the basin
   model's draws of 1[phi > 0] exp(-u) / q, Z- = mean over the ladder model's of 1[phi < 0]
   exp(-u) / q: each an unbiased estimate of its basin's partition function whatever the model
   (exact importance sampling; a bad model only widens the error), so dF = -ln(Z+ / Z-), with
   its delta-method error; the ESS inside each stratum says what each rests on.

Plain PT's own estimate (MBAR over its states) is taken from the same run at the wall time the
pipeline finished (training, MD and draws included, one core throughout), and at the run's end.

python benchmarks/stratified_basin_sampling.py --storage RUN/run.nc --data-seconds 90 --tag NAME
"""
import argparse
import copy
import json
import os
import sys
import time

import numpy as np
import openmm
import torch
from openmm import unit
from provenance import write_result  # noqa: E402  (benchmarks/, the script's directory)

import offline_model_levers
import remd_traces
from openmm_ddpm.analysis import (generate_with_densities, stratified_free_energy_difference_kt,
                                  stratum_log_partition_function)

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET_KELVIN = 300.0


def basin_md(system, seeds, md_ps, stride, seed):
    """Frames (n, N, 3) nm of 300 K Langevin MD from each seed configuration (2 ps relaxation discarded)."""
    integrator = openmm.LangevinMiddleIntegrator(TARGET_KELVIN * unit.kelvin, 10 / unit.picosecond,
                                                 1 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed + 1)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    rng = np.random.default_rng(seed)
    frames = []
    for x in seeds:
        context.setPositions(x)
        context.setVelocitiesToTemperature(TARGET_KELVIN * unit.kelvin, int(rng.integers(1 << 30)))
        integrator.step(2000)
        for _ in range(int(round(md_ps * 1000 / stride))):
            integrator.step(stride)
            frames.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return np.asarray(frames)


def featurize(learner, positions):
    """Frames (``offline_model_levers.Frames``) of configurations at 300 K in the learner's representation."""
    representation, coordinates = learner.representation, learner.representation.coordinates
    chosen = coordinates.relabel(torch.as_tensor(positions, dtype=torch.float64), learner.relabel_rng)
    z, _ = representation.forward(chosen)
    keep = coordinates.in_domain(representation.standardizer.inverse(z)[0])
    n = int(keep.sum())
    return offline_model_levers.Frames(z[keep], torch.full((n,), TARGET_KELVIN, dtype=torch.float64),
                                       np.ones(n, dtype=bool), chosen[keep], coordinates.frame(chosen[keep]))


def stratum(learner, system, molecule, positive, n_samples, seed):
    """The ``StratumEstimate`` of phi > 0 (``positive``) or phi < 0 from the learner's model's draws at 300 K."""
    positions, reduced, log_q = generate_with_densities(learner.proposal_model, system, TARGET_KELVIN * unit.kelvin,
                                                        n_samples, molecule.positions, batch_size=64, seed=seed)
    return stratum_log_partition_function(-reduced - log_q, remd_traces.phi_positive(positions) == positive)


def pipeline(storage, data_seconds, args):
    """The five steps above on one run's first ``data_seconds``; a dict of the estimate and the time split (s)."""
    wall = np.load(os.path.join(os.path.dirname(storage), "wall.npy"))
    cut = int(np.searchsorted(wall, data_seconds, side="right"))
    clock, seconds = time.perf_counter(), {"data": float(wall[cut - 1])}

    def lap(name):
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = now - clock
        clock = now

    ladder_learner, ladder, molecule, frames = offline_model_levers.prepare(storage, 0, args.seed, last_iteration=cut)
    basin_learner = copy.deepcopy(ladder_learner)  # the same fitted representation, its own network
    lap("read_and_featurize")  # mostly reading the storage, which a live sampler (frames in memory) would not pay
    offline_model_levers.train(ladder_learner, frames, offline_model_levers.Variant(steps=args.steps),
                               ladder.temperatures_kelvin)
    lap("ladder_model_training")
    rng = np.random.default_rng(args.seed)
    in_basin = np.flatnonzero(frames.in_basin)
    seeds = frames.positions[rng.choice(in_basin, min(args.seeds, len(in_basin)), replace=False)].numpy()
    md = basin_md(ladder.system, seeds, args.md_ps, args.stride, args.seed)
    md_in_basin = remd_traces.phi_positive(md)
    if not md_in_basin.any():
        raise SystemExit("no basin MD frame stayed in phi > 0: give more --seeds or --md-ps")
    lap("basin_md")
    basin_frames = featurize(basin_learner, md[md_in_basin])
    offline_model_levers.train(basin_learner, basin_frames, offline_model_levers.Variant(steps=args.steps),
                               ladder.temperatures_kelvin)
    lap("basin_model_training")
    plus = stratum(basin_learner, ladder.system, molecule, True, args.samples, args.seed + 1)
    minus = stratum(ladder_learner, ladder.system, molecule, False, args.samples, args.seed + 2)
    lap("draws")
    df, df_error = stratified_free_energy_difference_kt(plus, minus)
    total = sum(seconds.values())
    arrays = offline_model_levers.plain_run_arrays(storage)
    plain_df, plain_error = offline_model_levers.plain_run_df(storage, 0, int(np.searchsorted(wall, total, side="right")),
                                                              arrays)
    end_df, end_error = offline_model_levers.plain_run_df(storage, 0, None, arrays)
    plain_course = []  # plain PT's own running estimate, every minute of its run
    for minute in np.arange(60.0, wall[-1] + 1e-9, 60.0):
        estimate = offline_model_levers.plain_run_df(storage, 0, int(np.searchsorted(wall, minute, side="right")), arrays)
        plain_course.append({"wall_seconds": float(minute), "df_kT": estimate[0], "df_error_kT": estimate[1]})
    return {"storage": os.path.basename(os.path.dirname(os.path.abspath(storage))), "data_seconds": data_seconds,
            "data_iterations": cut, "frames": len(frames.z), "phi_positive_frames": int(frames.in_basin.sum()),
            "phi_positive_frames_300K": int(frames.in_basin[frames.kelvin.numpy() == TARGET_KELVIN].sum()),
            "md_frames": len(md), "md_frames_in_basin": int(md_in_basin.sum()),
            "df_kT": df, "df_error_kT": df_error, "ess_phi_positive": plus.ess, "ess_phi_negative": minus.ess,
            "samples": args.samples, "basin_model_draws_in_phi_positive": plus.draws_inside / plus.draws,
            "ladder_model_draws_in_phi_negative": minus.draws_inside / minus.draws,
            "seconds": seconds, "wall_seconds": total,
            "plain_same_clock": {"wall_seconds": total if total <= wall[-1] else None,
                                 "df_kT": plain_df if total <= wall[-1] else None,
                                 "df_error_kT": plain_error if total <= wall[-1] else None},
            "plain_run_end": {"wall_seconds": float(wall[-1]), "iterations": len(wall), "df_kT": end_df,
                              "df_error_kT": end_error},
            "plain_course": plain_course}


def plot(result, path):
    """dF(300 K) against wall time: each plain run's running MBAR estimate (band: its error) and the pipeline's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    reference = result["reference_df_kT"]
    axis.axhspan(reference - 0.2, reference + 0.2, color="0.9", label="reference +- 0.2 kT")
    axis.axhline(reference, color="0.5", lw=0.8)
    seen = set()
    for i, row in enumerate(result["rows"]):
        color = f"C{sorted({r['storage'] for r in result['rows']}).index(row['storage'])}"
        if row["storage"] not in seen:
            seen.add(row["storage"])
            course = row["plain_course"]
            t = [c["wall_seconds"] for c in course]
            df = np.array([c["df_kT"] for c in course])
            error = np.array([c["df_error_kT"] for c in course])
            axis.plot(t, df, "-", color=color, lw=1, label=f"plain PT, MBAR ({row['storage']})")
            axis.fill_between(t, df - error, df + error, color=color, alpha=0.15)
        axis.errorbar(row["wall_seconds"], row["df_kT"], row["df_error_kT"], fmt="o", color=color, capsize=3,
                      label="stratified IS (data + models + draws)" if i == 0 else None)
    axis.set(xlabel="wall time, one CPU core (s)", ylabel="dF(300 K), phi > 0 vs phi < 0 (kT)",
             title="Alanine dipeptide in vacuum: a rare basin at 300 K", ylim=(reference - 2.5, reference + 2.5))
    axis.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", nargs="+", required=True, help="plain runs of offline_model_levers.py simulate")
    parser.add_argument("--data-seconds", type=float, nargs="+", default=[90.0])
    parser.add_argument("--steps", type=int, default=20_000, help="training steps of each model")
    parser.add_argument("--seeds", type=int, default=32, help="basin MD: starting configurations")
    parser.add_argument("--md-ps", type=float, default=20.0, help="basin MD: ps per seed after 2 ps of relaxation")
    parser.add_argument("--stride", type=int, default=40, help="basin MD: steps (fs) between frames")
    parser.add_argument("--samples", type=int, default=4096, help="draws per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with open(os.path.join(HERE, "results", "compare_reference_alanine_vacuum.json")) as stream:
        reference = json.load(stream)["df_kT"]
    rows = []
    for storage in args.storage:
        for data_seconds in args.data_seconds:
            rows.append(pipeline(storage, data_seconds, args))
            print(json.dumps({key: rows[-1][key] for key in ("storage", "data_seconds", "df_kT", "df_error_kT",
                                                              "ess_phi_positive", "ess_phi_negative", "wall_seconds",
                                                              "plain_same_clock")}), flush=True)
    path = os.path.join(HERE, "results", f"stratified_basin_sampling_{args.tag}.json")
    result = {"reference_df_kT": reference, "settings": {k: v for k, v in vars(args).items() if k != "storage"},
              "rows": rows}
    write_result(path, result, __file__, argv)
    plot(result, os.path.splitext(path)[0] + ".png")


if __name__ == "__main__":
    sys.exit(main())
