"""Representations: bijections between positions (nm) and model features.

Every map returns ``(value, logdet)`` (DESIGN.md section 3). ``cartesian``
holds the Cartesian map (optionally centre-of-mass free) and the positions
contract; ``representation`` chains a map with a fitted standardization;
``internal`` is the Z-matrix of one molecule, built from ``topology``
(bond graph -> placement order, chiral centres), ``geometry`` (NeRF,
angles, dihedrals in torch) and ``symmetry`` (rotor groups, their
relabelling, the ``SymmetricCoordinates`` protocol); ``molecules`` joins
one Z-matrix per connected component. May import numpy, torch, openmm;
nothing else of the package.
"""
from openmm_ddpm.coordinates.cartesian import CartesianCoordinates, as_positions_tensor
from openmm_ddpm.coordinates.internal import InternalCoordinates
from openmm_ddpm.coordinates.molecules import MoleculeCoordinates, molecular_coordinates
from openmm_ddpm.coordinates.representation import Representation, Standardizer
from openmm_ddpm.coordinates.symmetry import SymmetricCoordinates

__all__ = ["CartesianCoordinates", "InternalCoordinates", "MoleculeCoordinates", "Representation", "Standardizer",
           "SymmetricCoordinates", "as_positions_tensor", "molecular_coordinates"]
