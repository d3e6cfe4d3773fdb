"""Bond constraints: internal coordinates without the constrained bond lengths, and the mass-metric factor.

Constrained dynamics (OpenMM's integrators with SHAKE/CCMA/SETTLE
constraints) samples exp(-u(x)) on the constraint manifold with respect to
the surface measure that the mass metric M induces (the momenta live on
the tangent space; docs/exactness.md, "Bond constraints"). In the free
coordinates xi = (translation, rotation, q) of the manifold, q the internal
coordinates without the constrained bond lengths c, that measure is
sqrt(det G(q)) dxi with G = J^T M J, J = dx/dxi. With the full internal
coordinates Q = (q, c), G_free is a block of G_full = J_full^T M J_full,
whose inverse has the cc block Z = grad c M^-1 grad c^T, so (Schur
complement)

    det G_free = det G_full * det Z,    sqrt(det G_full) = const * J(Q),

J(Q) the Z-matrix Jacobian (``internal``). The density on the slice of a
fixed frame therefore carries J(Q) sqrt(det Z(x)) (Fixman 1974), where for
bond constraints

    Z_ab = sum_k (1/m_k) (d c_a / d x_k) . (d c_b / d x_k)
         = 1/m_i + 1/m_j on the diagonal, +-(1/m_k) u_a . u_b for bonds sharing atom k,

u the bond's unit vector. Z is block-diagonal over groups of constraints
that share atoms (with HBonds: one heavy atom and its hydrogens), so its
determinant costs almost nothing.

``ConstrainedCoordinates`` wraps ``InternalCoordinates`` or
``MoleculeCoordinates``: its features leave out the constrained bond
lengths, its inverse puts every constrained bond at exactly its constraint
length (candidates lie on the manifold), and its log-determinants carry
the factor above. A constraint that is not a bond of the Z-matrix (a ring
bond, an angle constraint such as rigid water's H-H distance) cannot be
kept this way and is refused (``constraint_problem``).
"""
import numpy as np
import torch
from openmm import unit

from openmm_ddpm.coordinates.cartesian import as_positions_tensor
from openmm_ddpm.coordinates.topology import (
    bond_graph_from_system,
    build_zmatrix,
    connected_components,
    zmatrix_bonds,
)


def system_constraints(system):
    """The System's distance constraints: list of (atom a, atom b, length nm)."""
    constraints = []
    for index in range(system.getNumConstraints()):
        a, b, length = system.getConstraintParameters(index)
        constraints.append((int(a), int(b), float(length.value_in_unit(unit.nanometer))))
    return constraints


def constraint_problem(system, atoms=None):
    """Why proposals cannot keep this System's constraints exactly, or None if they can.

    They can when every constraint is a bond of the Z-matrix of its
    molecule (``constraints=HBonds``, ``HBonds`` with flexible water, or
    ``AllBonds`` on a molecule without rings); they cannot for ring bonds,
    angle constraints (``HAngles``, rigid water) or molecules of fewer than
    3 atoms. With ``atoms`` (the atoms a move changes, whole molecules) only
    the constraints that touch them count.
    """
    moved = None if atoms is None else {int(a) for a in atoms}
    constraints = [(a, b) for a, b, _ in system_constraints(system) if moved is None or a in moved or b in moved]
    if not constraints:
        return None
    neighbours, elements = bond_graph_from_system(system)
    bonds = set()
    for component in connected_components(neighbours):
        if len(component) < 3 or (moved is not None and not moved.issuperset(component)):
            continue
        local = {atom: m for m, atom in enumerate(component)}
        order, references, second = build_zmatrix([[local[b] for b in neighbours[a]] for a in component],
                                                  [elements[a] for a in component])
        bonds.update(tuple(sorted((component[i], component[j]))) for i, j in zmatrix_bonds(order, references, second))
    for a, b in constraints:
        if tuple(sorted((a, b))) not in bonds:
            return (f"the constraint between atoms {a} and {b} is not a bond of the internal coordinates (a ring bond, "
                    "an angle constraint such as HAngles or rigid water, a molecule of fewer than 3 atoms, or a "
                    "molecule only partly moved), so proposals cannot keep it exactly; build the System with "
                    "constraints=HBonds (or None) and rigidWater=False")
    return None


class ConstraintMetric:
    """log det Z(x) of bond constraints (module docstring), block by block.

    Parameters
    ----------
    pairs : array_like of int, (c, 2)
        Atom pairs of the constraints.
    masses : array_like, (N,), amu
    """

    def __init__(self, pairs, masses):
        pairs = np.asarray(pairs, dtype=int).reshape(-1, 2)
        masses = np.asarray(masses, dtype=float)
        if not np.all(masses[pairs] > 0):
            raise ValueError("constrained atoms need positive masses (no massless particles)")
        with np.errstate(divide="ignore"):
            inverse_mass = np.where(masses > 0, 1.0 / masses, 0.0)
        self.first, self.second = torch.as_tensor(pairs[:, 0]), torch.as_tensor(pairs[:, 1])
        blocks = _constraint_blocks(pairs)
        size = max((len(b) for b in blocks), default=1)
        self.block_members = torch.full((len(blocks), size), -1, dtype=torch.long)
        diagonal = np.ones((len(blocks), size))
        terms = []  # (block, row, column, constraint a, constraint b, atom k, sign)
        for n, block in enumerate(blocks):
            self.block_members[n, :len(block)] = torch.as_tensor(block)
            for p, a in enumerate(block):
                diagonal[n, p] = inverse_mass[pairs[a, 0]] + inverse_mass[pairs[a, 1]]
                for q, b in enumerate(block):
                    for k in set(pairs[a]) & set(pairs[b]) if p != q else ():
                        sign = (1 if pairs[a, 0] == k else -1) * (1 if pairs[b, 0] == k else -1)
                        terms.append((n, p, q, a, b, sign * inverse_mass[k]))
        self.diagonal = torch.as_tensor(diagonal)
        columns = list(zip(*terms)) if terms else [[]] * 6
        self._block, self._row, self._column, self._a, self._b = (torch.as_tensor(c, dtype=torch.long) for c in columns[:5])
        self._coefficient = torch.as_tensor(columns[5], dtype=torch.float64)

    def _unit_vectors(self, positions):
        bond = positions[:, self.first] - positions[:, self.second]
        return bond / torch.linalg.norm(bond, dim=-1, keepdim=True)

    def blocks(self, positions):
        """The diagonal blocks of Z at positions (n, N, 3) nm: (n, n_blocks, size, size), identity-padded."""
        positions = as_positions_tensor(positions)
        metric = torch.diag_embed(self.diagonal.to(positions)).expand(positions.shape[0], -1, -1, -1).clone()
        if len(self._coefficient):
            unit_vectors = self._unit_vectors(positions)
            cosines = (unit_vectors[:, self._a] * unit_vectors[:, self._b]).sum(-1)
            metric[:, self._block, self._row, self._column] = self._coefficient.to(positions) * cosines
        return metric

    def log_det(self, positions):
        """log det Z at positions (n, N, 3) nm, (n,); NaN where the positions are."""
        return torch.linalg.slogdet(self.blocks(positions)).logabsdet.sum(-1)

    def project_velocities(self, positions, velocities, inverse_masses):
        """Velocities (N, 3) made tangent to the manifold at positions (N, 3): the M-orthogonal projection.

        v' = v - M^-1 grad c^T Z^-1 grad c v, so that every constrained
        bond's rate d|r|/dt is zero; solved exactly, block by block.

        Parameters
        ----------
        positions, velocities : array_like, (N, 3), nm and nm/ps
        inverse_masses : array_like, (N,), 1/amu
        """
        positions = as_positions_tensor(positions)
        velocities = torch.as_tensor(np.asarray(velocities, dtype=float)).clone()
        inverse_masses = torch.as_tensor(np.asarray(inverse_masses, dtype=float))
        unit_vectors = self._unit_vectors(positions)[0]
        rates = (unit_vectors * (velocities[self.first] - velocities[self.second])).sum(-1)
        members = self.block_members.clamp(min=0)
        padded_rates = torch.where(self.block_members >= 0, rates[members], 0.0)
        multipliers = torch.linalg.solve(self.blocks(positions)[0], padded_rates.unsqueeze(-1))[..., 0]
        lambdas = torch.zeros_like(rates)
        lambdas[members[self.block_members >= 0]] = multipliers[self.block_members >= 0]
        impulse = lambdas.unsqueeze(-1) * unit_vectors
        velocities.index_add_(0, self.first, -inverse_masses[self.first].unsqueeze(-1) * impulse)
        velocities.index_add_(0, self.second, inverse_masses[self.second].unsqueeze(-1) * impulse)
        return velocities.numpy()


def _constraint_blocks(pairs):
    """Groups of constraint indices linked by shared atoms (the diagonal blocks of Z)."""
    by_atom = {}
    for index, (a, b) in enumerate(pairs):
        by_atom.setdefault(int(a), []).append(index)
        by_atom.setdefault(int(b), []).append(index)
    linked = [sorted({other for atom in pair for other in by_atom[int(atom)]}) for pair in pairs]
    return [sorted(block) for block in connected_components(linked)]


class ConstrainedCoordinates:
    """Internal coordinates of a constrained System: the free coordinates and the mass-metric factor.

    Parameters
    ----------
    coordinates : InternalCoordinates or MoleculeCoordinates
        The full internal coordinates (their bond graph holds the constraints).
    constraints : list of (int, int, float)
        (atom a, atom b, length nm), as ``system_constraints``.
    masses : array_like, (N,), amu

    Every attribute this class does not define is the wrapped coordinates'.
    """

    def __init__(self, coordinates, constraints, masses):
        columns = coordinates.bond_feature_columns()
        for a, b, _ in constraints:
            if tuple(sorted((a, b))) not in columns:
                raise ValueError(f"the constraint between atoms {a} and {b} is not a bond of the internal coordinates; "
                                 "build the System with constraints=HBonds (or None) and rigidWater=False")
        self.coordinates = coordinates
        self.constrained_columns = torch.as_tensor([columns[tuple(sorted((a, b)))] for a, b, _ in constraints])
        self.constrained_lengths = torch.as_tensor([length for _, _, length in constraints], dtype=torch.float64)
        self.free_columns = torch.as_tensor(sorted(set(range(coordinates.n_features)) - set(self.constrained_columns.tolist())))
        self.metric = ConstraintMetric([(a, b) for a, b, _ in constraints], masses)
        _check_rotor_constraints(getattr(coordinates, "rotor_groups", []), constraints)

    def __getattr__(self, name):
        if name == "coordinates":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.coordinates, name)

    @property
    def n_features(self):
        return len(self.free_columns)

    def full_features(self, features):
        """Free features (n, n_features) -> the wrapped coordinates' features, constrained bonds at their lengths."""
        full = features.new_empty((features.shape[0], self.coordinates.n_features))
        full[:, self.free_columns] = features
        full[:, self.constrained_columns] = self.constrained_lengths.to(features)
        return full

    def forward(self, positions):
        """Positions (n, N, 3) nm -> (free features, logdet = -ln(J sqrt(det Z)) (n,))."""
        positions = as_positions_tensor(positions, self.coordinates.n_atoms)
        features, logdet = self.coordinates.forward(positions)
        return features[:, self.free_columns], logdet - 0.5 * self.metric.log_det(positions)

    def inverse(self, features, frame=None):
        """(free features, frame) -> (positions on the manifold (n, N, 3) nm, logdet = +ln(J sqrt(det Z)))."""
        positions, logdet = self.coordinates.inverse(self.full_features(features), frame)
        return positions, logdet + 0.5 * self.metric.log_det(positions)

    def in_domain(self, features):
        return self.coordinates.in_domain(self.full_features(features))

    def torsion_feature_indices(self):
        """Columns of the torsions in the free feature vector."""
        position = {int(c): m for m, c in enumerate(self.free_columns)}
        return [position[c] for c in self.coordinates.torsion_feature_indices()]


def _check_rotor_constraints(rotor_groups, constraints):
    """Relabelling a rotor group's hydrogens must keep every constraint: equal lengths within a group."""
    length_of = {}
    for a, b, length in constraints:
        length_of[a], length_of[b] = length_of.get(a, []) + [length], length_of.get(b, []) + [length]
    for hydrogens, _ in rotor_groups:
        lengths = {tuple(np.round(length_of.get(h, []), 9)) for h in hydrogens}
        if len(lengths) > 1:
            raise ValueError(f"the hydrogens {hydrogens} of a rotor group have different constraints; they cannot be "
                             "relabelled onto each other")


def constrained_coordinates(system, coordinates):
    """``coordinates`` wrapped in ``ConstrainedCoordinates`` if the System has constraints, else unchanged."""
    constraints = system_constraints(system)
    if not constraints:
        return coordinates
    masses = [system.getParticleMass(i).value_in_unit(unit.amu) for i in range(system.getNumParticles())]
    return ConstrainedCoordinates(coordinates, constraints, masses)
