"""The ``openmm-ddpm`` command line (grows with the project)."""
import argparse

from openmm_ddpm._version import __version__


def build_parser():
    """Return the argument parser of the ``openmm-ddpm`` command."""
    parser = argparse.ArgumentParser(
        prog="openmm-ddpm",
        description="Exact diffusion-model proposals for OpenMM replica exchange.",
    )
    parser.add_argument("--version", action="version", version=f"openmm-ddpm {__version__}")
    return parser


def main(argv=None):
    """Entry point of the ``openmm-ddpm`` console script."""
    parser = build_parser()
    parser.parse_args(argv)
    print(f"openmm-ddpm {__version__}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
