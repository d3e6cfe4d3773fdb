"""Installation script for openmm_ddpm."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "openmm_ddpm" / "_version.py").read_text()
).group(1)

setup(
    name="openmm_ddpm",
    version=VERSION,
    description=(
        "Temperature-conditioned diffusion models trained online on OpenMM "
        "replica exchange, injected back as exact Monte Carlo proposals."
    ),
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    packages=find_packages(include=["openmm_ddpm", "openmm_ddpm.*"]),
    python_requires=">=3.10",
    install_requires=[
        "numpy",
        "scipy",
        "torch>=2.1",
        "openmm>=8.0",
        "openmmtools>=0.23",
        "mdtraj",
        "pymbar>=4",
        "netCDF4",
        "pyyaml",
        "matplotlib",
        "tqdm",
    ],
    extras_require={"test": ["pytest"], "mpi": ["mpi4py", "mpich"]},
    entry_points={"console_scripts": ["openmm-ddpm=openmm_ddpm.app.cli:main"]},
    classifiers=["Programming Language :: Python :: 3"],
)
