"""Augmented vs plain parallel tempering on a double well whose answer is known exactly.

Plain parallel tempering only permutes configurations, so with one
left-well configuration among four replicas and no MD crossing it can never
reach the exact 300 K population (0.688); the augmented sampler's exact
proposals can (the setup: ``openmm_ddpm.app.double_well``).

Run:  python examples/double_well_remd.py [--iterations N] [--freeze-after N] [--output DIR]
"""
import argparse

import torch

from openmm_ddpm.app.double_well import compare, print_comparison

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--iterations", type=int, default=320)
parser.add_argument("--freeze-after", type=int, default=80)
parser.add_argument("--burn-in", type=int, default=40, help="frozen-phase iterations dropped before estimating")
parser.add_argument("--seed", type=int, default=0, help="seed of training and proposals")
parser.add_argument("--output", default=None, help="directory for the storage files (default: a temporary one)")
args = parser.parse_args()
torch.set_num_threads(1)
print_comparison(compare(args.iterations, args.freeze_after, args.burn_in, args.output, args.seed), args.iterations)
