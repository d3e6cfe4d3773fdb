"""Augmented parallel tempering of alanine dipeptide, analysed at every temperature and at one never simulated.

4 replicas from 300 to 1000 K in vacuum (or OBC1 implicit solvent),
internal coordinates with methyl-rotor symmetry, online training, the model
frozen half-way, exact proposals at 300 K; then P(phi > 0) and dF per state
and by MBAR, reweighted and pooled estimates at 381.7 K (never simulated),
figures and ``summary.json`` in ``--output``. The workflow is package code,
``openmm_ddpm.app.alanine_dipeptide``; this script only calls it.

Run:  python examples/alanine_dipeptide.py [--solvent vacuum|implicit] [--iterations N]
          [--freeze-after N] [--n-candidates K] [--output DIR]   (see --help for the rest)
      the same arguments plus --analyze-only analyse a finished run in --output again.
"""
from openmm_ddpm.app.alanine_dipeptide import main

if __name__ == "__main__":
    main()
