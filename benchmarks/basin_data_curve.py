"""How good a model's density is inside one basin against how many frames of that basin it learned from (issue 17).

Every model lever at fixed data left the 300 K phi > 0 basin of alanine dipeptide unusable
(``offline_model_levers.py``). This asks whether that is the cold end of the ladder or the count
of frames in the basin: a fresh default model (128 x 2, 10 flow steps, 20k steps, the package's
training) learns from the frames of ONE basin only (phi > 0 or phi < 0, every temperature of the
ladder, from one or more plain PT runs' storages), subsampled to ``--frames`` at random; it then
draws ``--samples`` configurations at each ``--targets`` temperature with exact log q. Per row: the
share of draws inside the basin, the Kish ESS of w = 1_basin exp(-u) / q over all draws and its
fraction, log Z of the basin (mean of w) with its delta-method error. Within a basin the model has
no rare region left to miss, so the ESS fraction measures how well it learned the basin's shape.

python benchmarks/basin_data_curve.py --storage A/run.nc B/run.nc --basin negative --frames 2000 8000 --tag NAME
python benchmarks/basin_data_curve.py --plot results/basin_data_curve_A.json results/basin_data_curve_B.json --png P.png
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from openmm import unit
from provenance import write_result  # noqa: E402  (benchmarks/, the script's directory)

import offline_model_levers
import remd_traces
from openmm_ddpm.analysis import generate_with_densities, stratum_log_partition_function

HERE = os.path.dirname(os.path.abspath(__file__))


def basin_subset(frames, positive, n_frames, seed):
    """Frames of one basin, ``n_frames`` of them at random (all if fewer); (Frames, per-temperature counts)."""
    index = np.flatnonzero(frames.in_basin if positive else ~frames.in_basin)
    if n_frames < len(index):
        index = np.sort(np.random.default_rng(seed).choice(index, n_frames, replace=False))
    chosen = torch.as_tensor(index)
    subset = offline_model_levers.Frames(frames.z[chosen], frames.kelvin[chosen], frames.in_basin[index],
                                         frames.positions[chosen], frames.frames[chosen])
    kelvin = subset.kelvin.numpy()
    return subset, {f"{t:.1f}": int((kelvin == t).sum()) for t in np.unique(kelvin)}


def rows_for(storages, positive, n_frames, targets, n_samples, steps, seed):
    """Train on ``n_frames`` frames of the basin, then draw at each target; one row per target."""
    start = time.perf_counter()
    learner, ladder, molecule, frames = offline_model_levers.prepare(storages, 200, seed)
    subset, counts = basin_subset(frames, positive, n_frames, seed)
    loss = offline_model_levers.train(learner, subset, offline_model_levers.Variant(steps=steps),
                                      ladder.temperatures_kelvin)
    trained = time.perf_counter()
    rows = []
    for i, kelvin in enumerate(targets):
        began = time.perf_counter()
        positions, reduced, log_q = generate_with_densities(learner.proposal_model, ladder.system, kelvin * unit.kelvin,
                                                            n_samples, molecule.positions, batch_size=64,
                                                            seed=seed + 1 + i)
        inside = remd_traces.phi_positive(positions) == positive
        estimate = stratum_log_partition_function(-reduced - log_q, inside)
        log_z, log_z_error, ess = estimate.log_z, estimate.log_z_error, estimate.ess
        rows.append({"basin": "phi > 0" if positive else "phi < 0", "training_frames": len(subset.z),
                     "training_frames_per_kelvin": counts, "temperature_kelvin": kelvin, "samples": n_samples,
                     "drawn_in_basin": float(inside.mean()), "ess": ess, "ess_fraction": ess / n_samples,
                     "log_z": log_z, "log_z_error": log_z_error, "final_loss": loss,
                     "train_seconds": trained - start, "draw_seconds": time.perf_counter() - began})
        print(json.dumps({k: rows[-1][k] for k in ("basin", "training_frames", "temperature_kelvin", "drawn_in_basin",
                                                      "ess", "ess_fraction", "log_z", "log_z_error")}), flush=True)
    return rows


def plot(paths, out):
    """ESS fraction against training frames, one line per basin and temperature, from result files; PNG at ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 4))
    for path in paths:
        with open(path) as stream:
            rows = json.load(stream)["rows"]
        for kelvin, style in zip(sorted({row["temperature_kelvin"] for row in rows}), ("-o", "--s")):
            chosen = sorted((row for row in rows if row["temperature_kelvin"] == kelvin), key=lambda r: r["training_frames"])
            axis.plot([r["training_frames"] for r in chosen], [r["ess_fraction"] for r in chosen], style,
                      label=f"{chosen[0]['basin']}, drawn at {kelvin:.0f} K")
    axis.set(xscale="log", yscale="log", xlabel="training frames of the basin (all ladder temperatures)",
             ylabel="ESS / draws inside the basin", title="Model density inside one basin vs its data")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=120)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", nargs="+", metavar="RESULT", help="only plot these result files (to --png)")
    parser.add_argument("--png", help="the plot's file (default: beside the first result)")
    parser.add_argument("--storage", nargs="+", help="plain runs of offline_model_levers.py simulate")
    parser.add_argument("--basin", choices=("positive", "negative"), help="phi > 0 or phi < 0")
    parser.add_argument("--frames", type=int, nargs="+", help="training frames of the basin")
    parser.add_argument("--targets", type=float, nargs="+", default=[300.0, 617.8], help="K")
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag")
    args = parser.parse_args(argv)
    if args.plot:
        plot(args.plot, args.png or os.path.splitext(args.plot[0])[0] + ".png")
        return
    if not (args.storage and args.basin and args.frames and args.tag):
        parser.error("--storage, --basin, --frames and --tag are needed to measure (or --plot RESULT ...)")
    torch.set_num_threads(1)
    rows = [row for n in args.frames
            for row in rows_for(args.storage, args.basin == "positive", n, args.targets, args.samples, args.steps,
                                args.seed)]
    storages = [os.path.basename(os.path.dirname(os.path.abspath(s))) for s in args.storage]
    write_result(os.path.join(HERE, "results", f"basin_data_curve_{args.tag}.json"),
                 {"storages": storages, "rows": rows}, __file__, argv)


if __name__ == "__main__":
    sys.exit(main())
