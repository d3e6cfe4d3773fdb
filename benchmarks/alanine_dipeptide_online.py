"""Benchmark: online DDPM proposals on alanine dipeptide (vacuum or implicit), the numbers the molecules issue asks for.

Runs openmm_ddpm.app.alanine_dipeptide (augmented PT, 4 replicas 300-1000 K,
internal coordinates) with the given arguments and writes its summary, with
the command and the machine, to
benchmarks/results/alanine_dipeptide_online_<solvent>.json: at 300 K the MH
acceptance (K = 1), ESS fraction, fraction of candidates outside the
domain, the train/held-out gap in mean log w, accepted moves that change
the phi basin per proposal, and dF against the cached reference; the
reweighted generation at a never-simulated temperature; the time split.

python benchmarks/alanine_dipeptide_online.py [--tag NAME] [--solvent vacuum|implicit] [any argument of the application]

With --tag the result goes to alanine_dipeptide_online_<solvent>_<NAME>.json.
"""
import os
import platform
import sys
import tempfile

import openmm
import torch
from provenance import command_line, write_result  # noqa: E402  (benchmarks/, the script's directory)

from openmm_ddpm import __version__
from openmm_ddpm.app import alanine_dipeptide as example

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    command = command_line(__file__, argv)
    tag = None
    if "--tag" in argv:
        at = argv.index("--tag")
        tag = argv[at + 1]
        del argv[at:at + 2]
    if "--output" not in argv:
        argv += ["--output", tempfile.mkdtemp(prefix="ala_online_")]
    summary = example.main(argv)
    solvent = summary["solvent"]
    summary["command"] = command
    summary.update(package_version=__version__, torch=torch.__version__, openmm=openmm.__version__,
                   machine=f"{platform.machine()}, {os.cpu_count()} cores, torch threads 1, "
                           f"OpenMM {summary['platform']} platform")
    output = os.path.join(HERE, "results", f"alanine_dipeptide_online_{solvent}{'_' + tag if tag else ''}.json")
    write_result(output, summary)


if __name__ == "__main__":
    main()
