"""Exact model densities per second: the two Jacobian routes of encoding, and scoring on the way out of the flow.

Loads a model (``--run``: a finished run's run.nc; or ``--model``: an
exported alanine dipeptide vacuum model, e.g. tests/data's), draws
candidates at 300 K and times, per batch size and alternating the two on the
same points, the exact log q the proposals compute (``log_prob``: invert
every Heun step, then its Jacobian) with the network's forward-mode
Jacobian (``ConditionedMLP.forward_with_input_jacobian``, the default)
against the reverse-mode route any network gets; the log q accumulated
along the forward pass (``sample(..., score_on_the_way_out=True)``: one
Jacobian per step, no inversion); and the largest differences between them
on the same points (issue 17, 'cheaper exact densities'). One CPU thread
(``--device cuda``: the network on the GPU, the coordinates on the CPU);
result in benchmarks/results/exact_density_rate_<tag>.json.

python benchmarks/exact_density_rate.py (--run RUN.nc | --model MODEL.pt [--device cuda]) --tag NAME [--batch-sizes 1 9 32]
    [--repeats 3]
"""
import argparse
import os
import time

import numpy as np
import torch
from openmm import unit

from openmm_ddpm import load_run
from provenance import write_result  # noqa: E402  (benchmarks/, the script's directory)

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start


def encode_reverse_mode(model, positions, temperature):
    """log q by encoding with the reverse-mode Jacobian route (what a network without forward mode gets)."""
    diffusion = model.diffusion
    diffusion.step_with_jacobian = diffusion._step_with_jacobian_reverse  # this instance only, undone below
    try:
        return model.log_prob(positions, temperature)
    finally:
        del diffusion.step_with_jacobian


def rates(model, reference, n, seed, repeats):
    """Seconds per batch of n (best of ``repeats``, the routes alternated): draw, encode both ways, forward."""
    temperature = 300 * unit.kelvin
    (positions, _), draw = timed(model.draw, n, temperature, generator=torch.Generator().manual_seed(seed),
                                 reference_positions=reference)
    seconds = {"encode": [], "encode_reverse": [], "forward": []}
    for _ in range(repeats):
        log_q, t = timed(model.log_prob, positions, temperature)
        seconds["encode"].append(t)
        log_q_reverse, t = timed(encode_reverse_mode, model, positions, temperature)
        seconds["encode_reverse"].append(t)
        (forward_positions, forward_log_q), t = timed(model.sample, n, temperature, reference_positions=reference,
                                                      generator=torch.Generator().manual_seed(seed + 1),
                                                      score_on_the_way_out=True)
        seconds["forward"].append(t)
    encoded_log_q = model.log_prob(forward_positions, temperature)
    both = np.isfinite(forward_log_q) & np.isfinite(encoded_log_q)
    routes = np.isfinite(log_q) & np.isfinite(log_q_reverse)
    best = {name: min(values) for name, values in seconds.items()}
    return {"batch": n, "draw_seconds": draw, **{f"{name}_seconds": value for name, value in best.items()},
            **{f"{name}_per_second": n / value for name, value in best.items()},
            "encode_speedup_forward_over_reverse_mode": best["encode_reverse"] / best["encode"],
            "max_abs_log_q_difference_routes": largest_difference(log_q[routes], log_q_reverse[routes]),
            "max_abs_log_q_difference_forward_vs_encoded": largest_difference(forward_log_q[both], encoded_log_q[both]),
            "points_compared": int(both.sum())}


def largest_difference(a, b):
    """max |a - b| (NaN when there is no point to compare: every draw outside the support)."""
    return float(np.abs(a - b).max()) if len(a) else float("nan")


def load_model(args):
    """(proposal model, reference positions nm) from --run or --model."""
    if args.run:
        run = load_run(args.run)
        return run.model, run.learner.reference_positions
    from openmmtools import testsystems

    from openmm_ddpm import load_exported_model

    system = testsystems.AlanineDipeptideVacuum(constraints=None).system
    return load_exported_model(args.model, system, device=args.device), torch.load(args.model, map_location="cpu", weights_only=True)["reference_positions"].numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a finished run's storage (run.nc)")
    source.add_argument("--model", help="an exported alanine dipeptide vacuum model (.pt)")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 9, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="where the network runs with --model: cpu or cuda")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, reference = load_model(args)
    rows = [rates(model, reference, n, seed, args.repeats) for seed, n in enumerate(args.batch_sizes)]
    for row in rows:
        print(row, flush=True)
    write_result(os.path.join(HERE, "results", f"exact_density_rate_{args.tag}.json"),
                 {"features": model.representation.n_features, "flow_steps": model.diffusion.settings.n_steps,
                  "network": model.diffusion.network.config(), "rows": rows}, __file__, argv)


if __name__ == "__main__":
    main()
