"""Exact model densities per second: encoding (what proposals use) against scoring on the way out of the flow.

Loads a finished run's model (``--run``, the application's run.nc), draws
candidates at 300 K and times, per batch size, the exact log q the
proposals compute (``log_prob``: invert every Heun step, then its
Jacobian) against the log q accumulated along the forward pass
(``sample(..., score_on_the_way_out=True)``: one Jacobian per step, no
inversion), and the largest difference between the two on the same points
(issue 17, 'cheaper exact densities'). One thread; result in
benchmarks/results/exact_density_rate_<tag>.json.

python benchmarks/exact_density_rate.py --run RUN.nc --tag NAME [--batch-sizes 1 9 32]
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


def rates(model, reference, n, seed):
    """Seconds of one batch of n: draw, encode, forward with density; and |log q forward - log q encoded|."""
    temperature = 300 * unit.kelvin
    start = time.perf_counter()
    positions, _ = model.draw(n, temperature, generator=torch.Generator().manual_seed(seed), reference_positions=reference)
    draw = time.perf_counter() - start
    start = time.perf_counter()
    model.log_prob(positions, temperature)
    encode = time.perf_counter() - start
    start = time.perf_counter()
    forward_positions, forward_log_q = model.sample(n, temperature, generator=torch.Generator().manual_seed(seed + 1),
                                                    reference_positions=reference, score_on_the_way_out=True)
    forward = time.perf_counter() - start
    encoded_log_q = model.log_prob(forward_positions, temperature)
    both = np.isfinite(forward_log_q) & np.isfinite(encoded_log_q)
    return {"batch": n, "draw_seconds": draw, "encode_seconds": encode, "encoded_per_second": n / encode,
            "forward_seconds": forward, "forward_per_second": n / forward,
            "max_abs_log_q_difference": float(np.abs(forward_log_q[both] - encoded_log_q[both]).max()),
            "points_compared": int(both.sum())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 9, 32])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    run = load_run(args.run)
    rows = [rates(run.model, run.learner.reference_positions, n, seed) for seed, n in enumerate(args.batch_sizes)]
    for row in rows:
        print(row, flush=True)
    features = run.model.representation.n_features
    write_result(os.path.join(HERE, "results", f"exact_density_rate_{args.tag}.json"),
                 {"features": features, "flow_steps": run.model.diffusion.settings.n_steps,
                  "network": run.model.diffusion.network.config(), "rows": rows}, __file__, argv)


if __name__ == "__main__":
    main()
