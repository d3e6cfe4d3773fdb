"""Where the time of an augmented run goes, from a py-spy profile (issue 17: profile before optimising).

Record a run with py-spy (``pip install py-spy``, never committed), in raw
(collapsed-stack) format, then split its samples by what they were doing:

    py-spy record --rate 50 --format raw -o run.raw -- python -m openmm_ddpm.app.alanine_dipeptide ...
    python benchmarks/time_split.py run.raw --tag NAME --profiled "the command after --"

A sample counts for the first category (in the order of ``CATEGORIES``)
whose marker appears in its stack. The result goes to
benchmarks/results/time_split_<NAME>.json.
"""
import argparse
import os
from collections import Counter

from provenance import write_result  # noqa: E402  (benchmarks/, the script's directory)

HERE = os.path.dirname(os.path.abspath(__file__))
CATEGORIES = [  # (name, markers in a stack); the first match wins
    ("analysis after the run", ("alanine_analysis.py",)),
    ("proposals: encoding the current state", ("encode (",)),
    ("proposals: candidate draws (flow map, exact log q)", ("sample_and_score (", "_draw_and_score_forward (", "decode (")),
    ("proposals: energies of candidates", ("reduced_potentials (",)),
    ("proposals: other", ("_propose_if_due (",)),
    ("training: optimizer steps", ("trainer.py", "step (openmm_ddpm/model/trainer.py")),
    ("training: featurizing the buffer", ("_features (", "_build_model (")),
    ("MD (Langevin dynamics)", ("streaming.py", "LangevinDynamicsMove", "_propagate_replica (")),
    ("energy matrix for swaps", ("_compute_replica_energies (",)),
    ("replica mixing", ("_mix_replicas (",)),
    ("storage and checkpoints", ("multistatereporter.py", "_report_iteration", "checkpoints.py")),
    ("imports and start-up", ("<module> (", "_find_and_load")),
]


def split(path):
    """Samples per category, from a py-spy raw profile (one 'stack count' line per distinct stack)."""
    counts = Counter()
    with open(path) as stream:
        for line in stream:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            name = next((name for name, markers in CATEGORIES if any(m in stack for m in markers)), "other")
            counts[name] += int(count)
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", help="py-spy raw profile")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--profiled", required=True, help="the profiled command, recorded in the result")
    parser.add_argument("--rate", type=float, default=50.0, help="py-spy samples per second")
    args = parser.parse_args(argv)
    counts = split(args.profile)
    total = sum(counts.values())
    rows = {name: {"seconds": round(n / args.rate, 1), "share": round(n / total, 4)} for name, n in counts.most_common()}
    for name, row in rows.items():
        print(f"{row['share']:7.1%} {row['seconds']:8.1f} s  {name}")
    write_result(os.path.join(HERE, "results", f"time_split_{args.tag}.json"),
                 {"profiled_command": args.profiled, "sampled_seconds": round(total / args.rate, 1), "split": rows},
                 __file__, argv)


if __name__ == "__main__":
    main()
