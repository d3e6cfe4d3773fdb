"""Benchmark: proposals at 300 K from a mixture of the model at 300 K and at hotter temperatures.

The run's 300 K replica streamed no alpha_L frame, so the model's 300 K
conditional cannot propose that basin; its conditional at 381.7 K shapes it
well (benchmarks/results/alanine_dipeptide_long_training_*.json). This
measures what mixing the two buys at 300 K, without running a chain: for
each mixture of the pools' temperatures (equal weights), the expected
independence-MH acceptance (K = 1) over all pairs of held-out 300 K frames
x (phi < 0, as the run's 300 K frames are) and candidates y, and the rate of
accepted moves per proposal that carry x into phi > 0, E[min(1, w(y)/w(x)) 1(phi(y) > 0)].
At equilibrium the reverse flux is the same, so moves that change the phi
basin happen at about twice that rate per proposal.

Pools of model samples are drawn at each temperature; every pool sample and
held-out frame is scored at every temperature (exact log q by encoding, or
along the flow for its own), so any equal-weight mixture of pools is a
stratified draw from that mixture with its exact density.

python benchmarks/alanine_dipeptide_mixture.py --prepared DIR [--model tests/data/alanine_dipeptide_vacuum_model.pt]
    [--temperatures 300 381.67789096181775] [--pool 768] [--held-out 256] --tag TAG
"""
import argparse
import itertools
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from provenance import command_line, write_result  # noqa: E402  (benchmarks/, the script's directory)

from openmm_ddpm.moves.mixture import mixture_log_density  # noqa: E402


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", required=True, help="folder of alanine_dipeptide_long_training.py prepare (held-out frames)")
    parser.add_argument("--model", default=os.path.join(HERE, os.pardir, "tests", "data", "alanine_dipeptide_vacuum_model.pt"))
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 381.67789096181775],
                        help="K; the first is the target")
    parser.add_argument("--pool", type=int, default=768, help="model samples per temperature")
    parser.add_argument("--held-out", type=int, default=256, help="held-out target-temperature frames")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", required=True)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    from openmm import unit
    from openmmtools import states, testsystems

    from openmm_ddpm.analysis import backbone_dihedrals, expected_mh_acceptance
    from openmm_ddpm.moves import reduced_potentials
    from openmm_ddpm.multistate import load_exported_model

    test_system = testsystems.AlanineDipeptideVacuum(constraints=None)
    model = load_exported_model(args.model, test_system.system)
    reference = torch.load(args.model, map_location="cpu", weights_only=True)["reference_positions"].numpy()
    representation = model.representation
    target = args.temperatures[0] * unit.kelvin
    start = time.perf_counter()

    data = np.load(os.path.join(args.prepared, "features.npz"))
    z = torch.as_tensor(data["held_out_z"][:args.held_out])
    frame = representation.frame(torch.as_tensor(reference)[None]).expand(len(z), -1)
    held_out, _, _ = representation.inverse(z, frame)  # same internal coordinates, the reference's frame
    held_out = held_out.numpy()
    pools, log_q_pool = [], []
    generator = torch.Generator().manual_seed(args.seed)
    for k, kelvin in enumerate(args.temperatures):
        positions, log_q_own = model.sample(args.pool, kelvin * unit.kelvin, generator=generator,
                                            reference_positions=reference, score_on_the_way_out=True)
        valid = np.isfinite(log_q_own)
        scores = np.full((len(args.temperatures), args.pool), np.nan)
        for j, other in enumerate(args.temperatures):
            scores[j, valid] = log_q_own[valid] if j == k else model.log_prob(positions[valid], other * unit.kelvin)
        pools.append(positions)
        log_q_pool.append(scores)
        print(f"pool at {kelvin:.1f} K scored ({time.perf_counter() - start:.0f} s)", flush=True)
    log_q_held = np.stack([model.log_prob(held_out, kelvin * unit.kelvin) for kelvin in args.temperatures])

    thermodynamic_state = states.ThermodynamicState(test_system.system, target)
    sampler_state = states.SamplerState(unit.Quantity(reference, unit.nanometer))
    u_pool = [reduced_potentials(thermodynamic_state, sampler_state, np.where(np.isfinite(s[0])[:, None, None], p, np.nan))
              for p, s in zip(pools, log_q_pool)]
    u_held = reduced_potentials(thermodynamic_state, sampler_state, held_out)
    phi_pool = [np.degrees(backbone_dihedrals(p, test_system.topology)[0][:, 0]) for p in pools]  # NaN where invalid
    phi_held = np.degrees(backbone_dihedrals(held_out, test_system.topology)[0][:, 0])
    negative = phi_held < 0

    rows = []
    for size in range(1, len(args.temperatures) + 1):
        for members in itertools.combinations(range(len(args.temperatures)), size):
            if 0 not in members:
                continue  # mixtures that include the target's own conditional
            rows.append(_evaluate(members, args.temperatures, log_q_pool, u_pool, phi_pool, log_q_held, u_held, negative,
                                  expected_mh_acceptance))
            print(json.dumps(rows[-1]), flush=True)
    result = {"command": command_line(__file__),
              "model": os.path.relpath(args.model, os.path.dirname(HERE)),
              "held_out_frames": int(len(held_out)), "held_out_phi_negative": int(negative.sum()),
              "pool": args.pool, "wall_s": round(time.perf_counter() - start, 1), "mixtures": rows}
    output = os.path.join(HERE, "results", f"alanine_dipeptide_mixture_{args.tag}.json")
    write_result(output, result)


def _evaluate(members, temperatures, log_q_pool, u_pool, phi_pool, log_q_held, u_held, negative, expected_mh_acceptance):
    """Expected acceptance and phi < 0 -> phi > 0 rate of the equal-weight mixture of the member pools."""
    log_weights = np.full(len(members), -np.log(len(members)))

    def mix(scores):  # log q_mix of the equal-weight mixture of the members
        return mixture_log_density(scores[list(members)], log_weights)

    log_w_y = np.concatenate([-u_pool[k] - mix(log_q_pool[k]) for k in members])
    phi_y = np.concatenate([phi_pool[k] for k in members])
    log_w_y[~np.isfinite(log_w_y)] = -np.inf
    log_w_x = -u_held - mix(log_q_held)
    x = log_w_x[negative & np.isfinite(log_w_x)]
    ratio = np.exp(np.minimum(0.0, log_w_y[None, :] - x[:, None]))
    into_positive = ratio * (np.nan_to_num(phi_y, nan=-1.0) > 0)[None, :]
    return {"temperatures_kelvin": [temperatures[k] for k in members],
            "expected_mh_acceptance": expected_mh_acceptance(log_w_x, log_w_y),
            "candidates_phi_positive_share": float(np.mean(np.nan_to_num(phi_y, nan=-1.0) > 0)),
            "candidates_alpha_L_share": float(np.mean((phi_y > 0) & (phi_y < 120))),
            "accepted_into_phi_positive_per_proposal": float(into_positive.mean()),
            "outside_domain_fraction": float(np.mean(~np.isfinite(log_w_y)))}


if __name__ == "__main__":
    main()
