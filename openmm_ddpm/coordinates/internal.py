"""Internal coordinates (Z-matrix) of one molecule, with its exact Jacobian (DESIGN.md section 3).

Features: for the first three atoms of the placement order, r(1-0), r(2-j)
and the angle at j; for every further atom i, placed from three already
placed atoms (j bonded to i, then k, l), the bond r = |x_i - x_j|, the angle
theta(i, j, k) in (0, pi) and the torsion phi(i, j, k, l). The rigid-body
frame (position of atom 0 and the orientation given by atoms 0, 1, 2) is
kept from the current configuration, and the density on that slice carries

    J(q) = r_01^2 * r_2^2 sin(theta_2) * prod_i r_i^2 sin(theta_i),

so ``forward`` returns logdet = -ln J and ``inverse`` +ln J (the rigid-body
measure at a fixed frame is a constant that cancels in the move).

Sibling torsions: atoms placed from the same (j, k, l) (the substituents of
one atom, e.g. the three hydrogens of a methyl group) have torsions that
differ by nearly fixed amounts (~120 degrees). With
``relative_sibling_torsions`` (off by default) every sibling after the first is
represented by its torsion minus the first sibling's: a shear of unit
Jacobian that turns a thin diagonal direction of the data into a feature of
its own, which the standardization then scales to unit width.

Torsions are periodic: each is represented in a window [c, c + 2 pi) whose
cut c lies where the data is sparsest (``fit_torsion_cuts``). A feature
vector with a bond <= 0, an angle outside (0, pi), a torsion outside its
window, or a configuration whose chiral centres differ from the reference
structure's is outside the domain (weight 0 in the move).
"""
import math

import numpy as np
import torch

from openmm_ddpm.coordinates.cartesian import as_positions_tensor
from openmm_ddpm.coordinates.geometry import (
    bond_angle,
    dihedral,
    largest_gap_midpoint,
    place_atom,
    plane_point,
    signed_volumes,
    wrap_angle,
)
from openmm_ddpm.coordinates.symmetry import (
    ROTOR_WINDOW,
    energy_invariant_groups,
    fit_rotor_window,
    in_rotor_windows,
    log_multiplicity,
    relabel_rotors,
    rotor_hydrogen_groups,
)
from openmm_ddpm.coordinates.topology import (
    GraphTopology,
    atom_elements,
    bond_graph,
    bond_graph_from_system,
    build_zmatrix,
    chiral_centres,
    sibling_reference_rows,
    zmatrix_bonds,
)


class InternalCoordinates:
    """Z-matrix representation of one molecule from its topology.

    Parameters
    ----------
    topology : openmm.app.Topology or mdtraj.Topology
        Bonds define the Z-matrix; the molecule must be connected.
    reference_positions : array_like, (N, 3), nm
        Structure whose chiral centres every configuration must keep.
    torsion_cuts : array_like, (n_torsions,), rad, optional
        Window starts; default -pi (fit them with ``fit_torsion_cuts``).
    torsion_widths : array_like, (n_torsions,), rad, optional
        Window widths; default 2 pi, and ``ROTOR_WINDOW`` for the first
        hydrogen of a rotor group (fit them with ``fit_rotor_windows``).
    system : openmm.System, optional
        If given, rotor groups whose permutation leaves its energy unchanged
        are treated by symmetry (module docstring); without it, none are.
    relative_sibling_torsions : bool
        Represent each sibling torsion relative to the first sibling's
        (module docstring). Same density, unit Jacobian; False gives the
        plain Z-matrix torsions.
    """

    def __init__(self, topology, reference_positions, torsion_cuts=None, system=None, relative_sibling_torsions=False,
                 torsion_widths=None):
        if isinstance(topology, GraphTopology):
            self.neighbours, self.elements = topology.neighbours, topology.elements
        else:
            self.neighbours, self.elements = bond_graph(topology), atom_elements(topology)
        self.n_atoms = len(self.neighbours)
        self.order, self.references, self.second_reference = build_zmatrix(self.neighbours, self.elements)
        self.centres = chiral_centres(self.neighbours, self.elements)
        reference = as_positions_tensor(reference_positions, self.n_atoms)
        self.reference_chirality = torch.sign(signed_volumes(reference, self.centres))[0]
        self.torsion_cuts = torch.full((len(self.references),), -math.pi, dtype=torch.float64)
        if torsion_cuts is not None:
            self.torsion_cuts = torch.as_tensor(np.asarray(torsion_cuts, dtype=float))
        index = torch.tensor
        self._i, self._j, self._k, self._l = (index([ref[m] for ref in self.references], dtype=torch.long) for m in range(4))
        self.relative_sibling_torsions = bool(relative_sibling_torsions)
        self.sibling_reference = sibling_reference_rows(self.references, self.relative_sibling_torsions)
        groups = []
        if system is not None:
            candidates = rotor_hydrogen_groups(self.neighbours, self.elements, self.references)
            groups = energy_invariant_groups(system, reference.numpy()[0], candidates)
        self.use_rotor_groups(groups)
        if torsion_widths is not None:
            self.torsion_widths = torch.as_tensor(np.asarray(torsion_widths, dtype=float))

    def use_rotor_groups(self, groups):
        """Treat these (hydrogens, rows) groups by symmetry; their windows start at ``ROTOR_WINDOW``.

        ``groups`` must come from ``rotor_hydrogen_groups`` of this Z-matrix
        and be checked for energy invariance (``energy_invariant_groups``).
        """
        self.rotor_groups = list(groups)
        self.torsion_widths = torch.full((len(self.references),), 2 * math.pi, dtype=torch.float64)
        for _, rows in self.rotor_groups:
            self.torsion_widths[rows[0]] = ROTOR_WINDOW
        if any(int(self.sibling_reference[rows[0]]) >= 0 for _, rows in self.rotor_groups):
            raise AssertionError("a rotor group's first hydrogen must carry an absolute torsion")

    @classmethod
    def from_system(cls, system, reference_positions, torsion_cuts=None, relative_sibling_torsions=False,
                    torsion_widths=None):
        """Build from an OpenMM System's harmonic bonds (no Topology needed), with rotor symmetry."""
        return cls(GraphTopology(*bond_graph_from_system(system)), reference_positions, torsion_cuts, system=system,
                   relative_sibling_torsions=relative_sibling_torsions, torsion_widths=torsion_widths)

    @property
    def n_features(self):
        return 3 * self.n_atoms - 6

    def fit(self, positions, rng):
        """Fit the torsion windows on data (``fit_torsion_cuts``), rotor windows first.

        ``rng`` (numpy.random.Generator) relabels the rotors of ``positions`` first.
        """
        positions = as_positions_tensor(positions, self.n_atoms)
        self.fit_rotor_windows(positions)
        self.fit_torsion_cuts(self.relabel(positions, rng))

    def fit_rotor_windows(self, positions, coverage=0.999):
        """Place and size each rotor window W on data (``symmetry.fit_rotor_window``)."""
        torsions = self.raw_torsions(positions).numpy()
        for _, rows in self.rotor_groups:
            self.torsion_cuts[rows[0]], self.torsion_widths[rows[0]] = fit_rotor_window(torsions[:, list(rows)], coverage)

    def _in_rotor_window(self, positions):
        """(n, n_groups, 3) bool: which hydrogen of each group has its torsion inside W."""
        return in_rotor_windows(self.raw_torsions(positions), self.rotor_groups, self.torsion_cuts, self.torsion_widths)

    def log_multiplicity(self, positions):
        """log n(z) summed over rotor groups, (n,); -inf where z is not in Z (``symmetry.log_multiplicity``)."""
        return log_multiplicity(self._in_rotor_window(as_positions_tensor(positions, self.n_atoms)))

    def relabel(self, positions, rng):
        """Uniformly random valid cyclic relabelling of every rotor group (the kernel R).

        Parameters
        ----------
        positions : array_like, (n, N, 3), nm
        rng : numpy.random.Generator
        """
        positions = as_positions_tensor(positions, self.n_atoms).clone()
        if not self.rotor_groups:
            return positions
        return relabel_rotors(positions, self.rotor_groups, self._in_rotor_window(positions).numpy(), rng)

    @property
    def n_torsions(self):
        return len(self.references)

    def torsion_feature_indices(self):
        """Columns of the torsions in the feature vector."""
        return [3 + 3 * m + 2 for m in range(self.n_torsions)]

    def bond_feature_columns(self):
        """{(a, b), a < b: feature column} of the bonds that are features (ring-closing bonds are not)."""
        columns = [0, 1] + [3 + 3 * m for m in range(self.n_torsions)]
        bonds = zmatrix_bonds(self.order, self.references, self.second_reference)
        return {tuple(sorted(bond)): column for bond, column in zip(bonds, columns)}

    def frame(self, positions):
        """Positions of the first three placed atoms, (n, 9), nm."""
        positions = as_positions_tensor(positions, self.n_atoms)
        return positions[:, self.order[:3]].reshape(positions.shape[0], 9)

    def raw_torsions(self, positions):
        """Torsions in (-pi, pi], (n, n_torsions), rad."""
        positions = as_positions_tensor(positions, self.n_atoms)
        return dihedral(*(positions[:, index] for index in (self._i, self._j, self._k, self._l)))

    def feature_torsions(self, positions):
        """The torsion features before windowing: sibling torsions relative to
        their first sibling, in (-pi, pi], (n, n_torsions), rad."""
        return wrap_angle(self._relative_to_siblings(self.raw_torsions(positions)))

    def _relative_to_siblings(self, torsions):
        has_reference = self.sibling_reference >= 0
        if not has_reference.any():
            return torsions
        return torsions - torch.where(has_reference, torsions[:, self.sibling_reference.clamp(min=0)], 0.0)

    def _absolute_from_siblings(self, features):
        has_reference = self.sibling_reference >= 0
        if not has_reference.any():
            return features
        return features + torch.where(has_reference, features[:, self.sibling_reference.clamp(min=0)], 0.0)

    def fit_torsion_cuts(self, positions):
        """Put each torsion window's cut in the middle of the largest circular gap of the data.

        Rotor windows (``fit_rotor_windows``) are left as they are.
        """
        torsions = self.feature_torsions(positions).numpy()
        rotor_rows = {rows[0] for _, rows in self.rotor_groups}
        for row in range(self.n_torsions):
            if row not in rotor_rows:
                self.torsion_cuts[row] = largest_gap_midpoint(torsions[:, row])
        return self.torsion_cuts

    def forward(self, positions):
        """Positions (n, N, 3) nm -> (features (n, 3N-6), logdet = -ln J (n,))."""
        positions = as_positions_tensor(positions, self.n_atoms)
        a0, a1, a2 = self.order[:3]
        s = self.second_reference
        other = a1 if s == a0 else a0
        r01 = torch.linalg.norm(positions[:, a1] - positions[:, a0], dim=-1)
        r2 = torch.linalg.norm(positions[:, a2] - positions[:, s], dim=-1)
        theta2 = bond_angle(positions[:, a2], positions[:, s], positions[:, other])
        i, j, k, l = (positions[:, index] for index in (self._i, self._j, self._k, self._l))
        r = torch.linalg.norm(i - j, dim=-1)
        theta = bond_angle(i, j, k)
        phi = self._relative_to_siblings(dihedral(i, j, k, l))
        phi = self.torsion_cuts + torch.remainder(phi - self.torsion_cuts, 2 * math.pi)
        features = torch.cat([torch.stack([r01, r2, theta2], dim=-1), torch.stack([r, theta, phi], dim=-1).reshape(len(positions), -1)], dim=-1)
        return features, -self._log_jacobian(features)

    def _log_jacobian(self, features):
        r01, r2, theta2 = features[:, 0], features[:, 1], features[:, 2]
        rest = features[:, 3:].reshape(features.shape[0], -1, 3)
        return (2 * torch.log(r01) + 2 * torch.log(r2) + torch.log(torch.sin(theta2))
                + (2 * torch.log(rest[..., 0]) + torch.log(torch.sin(rest[..., 1]))).sum(-1))

    def inverse(self, features, frame=None):
        """(features, frame) -> (positions (n, N, 3) nm, logdet = +ln J (n,)).

        The frame (``frame(current)``) fixes atom 0, the direction 0 -> 1 and
        the plane of atoms 0, 1, 2. Invalid features give NaN positions.
        """
        if frame is None:
            raise ValueError("internal coordinates need the frame of a reference configuration")
        n = features.shape[0]
        frame = frame.to(features).reshape(-1, 3, 3).expand(n, 3, 3)
        safe = torch.where(self.in_domain(features).unsqueeze(-1), features, torch.nan)
        positions = [None] * self.n_atoms
        a0, a1, a2 = self.order[:3]
        origin, e1 = frame[:, 0], frame[:, 1] - frame[:, 0]
        e1 = e1 / torch.linalg.norm(e1, dim=-1, keepdim=True)
        positions[a0] = origin
        positions[a1] = origin + safe[:, :1] * e1
        s = self.second_reference
        other = a1 if s == a0 else a0
        # place atom 2 in the frame's plane (dihedral measured from the frame's third atom)
        positions[a2] = place_atom(positions[s], positions[other], plane_point(frame), safe[:, 1], safe[:, 2], torch.full_like(safe[:, 1], math.pi))
        rest = safe[:, 3:].reshape(n, -1, 3)
        torsions = self._absolute_from_siblings(rest[..., 2])
        for m, (i, j, k, l) in enumerate(self.references):
            positions[i] = place_atom(positions[j], positions[k], positions[l], rest[:, m, 0], rest[:, m, 1], torsions[:, m])
        return torch.stack(positions, dim=1), self._log_jacobian(safe)

    def in_domain(self, features):
        """Bonds > 0, angles in (0, pi), torsions inside their windows."""
        violations = self.domain_violations(features)
        return ~(violations["bond"] | violations["angle"] | violations["torsion"].any(-1)) & torch.isfinite(features).all(-1)

    def domain_violations(self, features):
        """Which condition of the domain each feature vector breaks.

        Returns
        -------
        dict of torch.BoolTensor
            ``bond`` (n,): a bond <= 0; ``angle`` (n,): an angle outside
            (0, pi); ``torsion`` (n, n_torsions): torsions outside their windows.
        """
        rest = features[:, 3:].reshape(features.shape[0], -1, 3)
        bonds = torch.cat([features[:, :2], rest[..., 0]], dim=-1)
        angles = torch.cat([features[:, 2:3], rest[..., 1]], dim=-1)
        torsions = rest[..., 2]
        return {
            "bond": ~(bonds > 0).all(-1),
            "angle": ~((angles > 0) & (angles < math.pi)).all(-1),
            "torsion": ~((torsions >= self.torsion_cuts) & (torsions < self.torsion_cuts + self.torsion_widths)),
        }

    def valid_positions(self, positions):
        """Configurations whose chiral centres match the reference structure, (n,) bool."""
        positions = as_positions_tensor(positions, self.n_atoms)
        signs = torch.sign(signed_volumes(positions, self.centres))
        return (signs == self.reference_chirality).all(-1) & torch.isfinite(positions).all(dim=(-2, -1))
