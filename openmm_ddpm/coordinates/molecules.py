"""Internal coordinates of several molecules: one Z-matrix per connected component.

A System of several molecules (a ligand and its receptor in implicit
solvent, a dimer in vacuum) has one bond graph per molecule. Each molecule
gets its own ``InternalCoordinates``; the feature vector is the
concatenation of theirs and log|det J| is their sum (the Jacobian of a
product of bijections is the product of the Jacobians). Every molecule
keeps its own rigid-body frame from the current configuration, so a
proposal changes the shapes of the molecules and not their placement
relative to each other: the move acts on the slice of fixed frames, exact
for the same reason as for one molecule (docs/exactness.md). Their
relative placement is sampled by MD and replica exchange.

Rotor groups are found per molecule and verified against the energy of
the whole System.
"""
import numpy as np
import torch

from openmm_ddpm.coordinates.cartesian import as_positions_tensor
from openmm_ddpm.coordinates.internal import InternalCoordinates
from openmm_ddpm.coordinates.symmetry import (
    energy_invariant_groups,
    rotor_hydrogen_groups,
)
from openmm_ddpm.coordinates.topology import (
    GraphTopology,
    bond_graph_from_system,
    connected_components,
)


def molecular_coordinates(system, reference_positions, torsion_cuts=None, relative_sibling_torsions=False,
                          torsion_widths=None):
    """Internal coordinates of a System's molecules, from its harmonic bonds.

    Returns ``InternalCoordinates`` for one molecule and ``MoleculeCoordinates``
    for several; both with rotor symmetry verified on ``system``.
    """
    neighbours, elements = bond_graph_from_system(system)
    if len(connected_components(neighbours)) == 1:
        return InternalCoordinates.from_system(system, reference_positions, torsion_cuts,
                                               relative_sibling_torsions=relative_sibling_torsions,
                                               torsion_widths=torsion_widths)
    return MoleculeCoordinates(neighbours, elements, reference_positions, system=system, torsion_cuts=torsion_cuts,
                               torsion_widths=torsion_widths, relative_sibling_torsions=relative_sibling_torsions)


class MoleculeCoordinates:
    """Internal coordinates of several molecules (module docstring).

    Parameters
    ----------
    neighbours : list of list of int
        Bond graph of all atoms (``bond_graph`` or ``bond_graph_from_system``).
    elements : list of str
    reference_positions : array_like, (N, 3), nm
        Structure whose chiral centres every configuration must keep.
    system : openmm.System, optional
        Enables rotor symmetry, verified on this System's energy.
    torsion_cuts, torsion_widths : array_like, (n_torsions,), rad, optional
        Concatenated over the molecules, in the order of ``atoms``.
    relative_sibling_torsions : bool

    Raises
    ------
    ValueError
        If a molecule has fewer than 3 atoms (an ion, a diatomic): it has
        no internal frame of its own to keep.
    """

    def __init__(self, neighbours, elements, reference_positions, system=None, torsion_cuts=None,
                 torsion_widths=None, relative_sibling_torsions=False):
        self.n_atoms = len(neighbours)
        self.atoms = connected_components(neighbours)
        small = [atoms for atoms in self.atoms if len(atoms) < 3]
        if small:
            raise ValueError(f"molecules with fewer than 3 atoms (atoms {small[:3]}) have no internal coordinates; "
                             "use the Cartesian representation for such a System")
        reference = as_positions_tensor(reference_positions, self.n_atoms)[0]
        self.molecules = []
        for atoms in self.atoms:
            local = {atom: m for m, atom in enumerate(atoms)}
            graph = GraphTopology([[local[b] for b in neighbours[a]] for a in atoms], [elements[a] for a in atoms])
            molecule = InternalCoordinates(graph, reference[atoms], relative_sibling_torsions=relative_sibling_torsions)
            if system is not None:
                molecule.use_rotor_groups(_verified_rotor_groups(molecule, graph, atoms, system, reference))
            self.molecules.append(molecule)
        self._sizes = [m.n_features for m in self.molecules]
        self._torsion_sizes = [m.n_torsions for m in self.molecules]
        for values, name in ((torsion_cuts, "torsion_cuts"), (torsion_widths, "torsion_widths")):
            if values is not None:
                parts = torch.split(torch.as_tensor(np.asarray(values, dtype=float)), self._torsion_sizes)
                for molecule, part in zip(self.molecules, parts):
                    setattr(molecule, name, part.clone())

    @property
    def n_features(self):
        return sum(self._sizes)

    @property
    def n_torsions(self):
        return sum(self._torsion_sizes)

    @property
    def torsion_cuts(self):
        return torch.cat([m.torsion_cuts for m in self.molecules])

    @property
    def torsion_widths(self):
        return torch.cat([m.torsion_widths for m in self.molecules])

    @property
    def rotor_groups(self):
        """(hydrogens, rows) with System atom indices and rows of the concatenated torsions."""
        groups, offset = [], 0
        for atoms, molecule in zip(self.atoms, self.molecules):
            groups += [(tuple(atoms[h] for h in hydrogens), tuple(offset + r for r in rows))
                       for hydrogens, rows in molecule.rotor_groups]
            offset += molecule.n_torsions
        return groups

    def bond_feature_columns(self):
        """{(a, b), a < b: column of the concatenated features} of the bonds that are features."""
        columns, offset = {}, 0
        for atoms, molecule in zip(self.atoms, self.molecules):
            for (a, b), column in molecule.bond_feature_columns().items():
                columns[tuple(sorted((atoms[a], atoms[b])))] = offset + column
            offset += molecule.n_features
        return columns

    def _parts(self, positions):
        positions = as_positions_tensor(positions, self.n_atoms)
        return positions, [positions[:, atoms] for atoms in self.atoms]

    def fit(self, positions, rng):
        """Fit every molecule's torsion and rotor windows on its part of the data."""
        for molecule, part in zip(self.molecules, self._parts(positions)[1]):
            molecule.fit(part, rng)

    def forward(self, positions):
        """Positions (n, N, 3) nm -> (features (n, n_features), logdet = -ln J (n,))."""
        outputs = [m.forward(part) for m, part in zip(self.molecules, self._parts(positions)[1])]
        return torch.cat([f for f, _ in outputs], dim=-1), sum(logdet for _, logdet in outputs)

    def inverse(self, features, frame=None):
        """(features, frames) -> (positions (n, N, 3) nm, logdet = +ln J (n,)); NaN where invalid."""
        if frame is None:
            raise ValueError("internal coordinates need the frame of a reference configuration")
        n = features.shape[0]
        frames = torch.split(frame.to(features).reshape(-1, 9 * len(self.molecules)), 9, dim=-1)
        positions = features.new_full((n, self.n_atoms, 3), float("nan"))
        logdet = features.new_zeros(n)
        for atoms, molecule, part, part_frame in zip(self.atoms, self.molecules, torch.split(features, self._sizes, -1), frames):
            placed, part_logdet = molecule.inverse(part, part_frame)
            positions[:, atoms] = placed
            logdet = logdet + part_logdet
        return positions, logdet

    def frame(self, positions):
        """Every molecule's frame (its first three placed atoms), (n, 9 n_molecules), nm."""
        return torch.cat([m.frame(part) for m, part in zip(self.molecules, self._parts(positions)[1])], dim=-1)

    def in_domain(self, features):
        parts = torch.split(features, self._sizes, dim=-1)
        return torch.stack([m.in_domain(part) for m, part in zip(self.molecules, parts)]).all(0)

    def valid_positions(self, positions):
        parts = self._parts(positions)[1]
        return torch.stack([m.valid_positions(part) for m, part in zip(self.molecules, parts)]).all(0)

    def log_multiplicity(self, positions):
        parts = self._parts(positions)[1]
        return sum(m.log_multiplicity(part) for m, part in zip(self.molecules, parts))

    def relabel(self, positions, rng):
        """Every molecule's rotor relabelling (``InternalCoordinates.relabel``)."""
        positions, parts = self._parts(positions)
        positions = positions.clone()
        for atoms, molecule, part in zip(self.atoms, self.molecules, parts):
            positions[:, atoms] = molecule.relabel(part, rng)
        return positions


def _verified_rotor_groups(molecule, graph, atoms, system, reference):
    """The molecule's rotor groups (local indices) whose permutation keeps the whole System's energy."""
    candidates = rotor_hydrogen_groups(graph.neighbours, graph.elements, molecule.references)
    global_groups = [(tuple(atoms[h] for h in hydrogens), rows) for hydrogens, rows in candidates]
    kept = {rows for _, rows in energy_invariant_groups(system, reference.numpy(), global_groups)}
    return [(hydrogens, rows) for hydrogens, rows in candidates if rows in kept]
