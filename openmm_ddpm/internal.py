"""Internal coordinates (Z-matrix) from a molecule's bond graph (DESIGN.md section 3).

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
from collections import deque

import numpy as np
import torch

from openmm_ddpm.coordinates import as_positions_tensor

ROTOR_WINDOW = math.radians(170.0)  # widest rotor window, and the width before fitting
MIN_ROTOR_WINDOW = 2 * math.pi / 3


def bond_graph(topology):
    """Adjacency lists of an openmm or mdtraj Topology's bonds."""
    n_atoms = topology.getNumAtoms() if hasattr(topology, "getNumAtoms") else topology.n_atoms
    neighbours = [[] for _ in range(n_atoms)]
    for bond in topology.bonds():
        a, b = (bond[0].index, bond[1].index)
        neighbours[a].append(b)
        neighbours[b].append(a)
    return [sorted(n) for n in neighbours]


def atom_elements(topology):
    """Element symbols (or atom names without element) of a Topology's atoms."""
    return [a.element.symbol if a.element is not None else a.name for a in topology.atoms()]


def _placement_order(neighbours, elements):
    """Breadth-first order from the most central heavy atom; parents in the BFS tree."""
    n_atoms = len(neighbours)
    heavy = [i for i in range(n_atoms) if elements[i] != "H" and neighbours[i]] or list(range(n_atoms))

    def eccentricity(start):
        distance = {start: 0}
        queue = deque([start])
        while queue:
            atom = queue.popleft()
            for other in neighbours[atom]:
                if other not in distance:
                    distance[other] = distance[atom] + 1
                    queue.append(other)
        if len(distance) != n_atoms:
            raise ValueError("InternalCoordinates needs one connected molecule (bonds of the topology); "
                             "use molecules.MoleculeCoordinates for several")
        return max(distance.values())

    root = min(heavy, key=lambda atom: (eccentricity(atom), -len(neighbours[atom]), atom))
    order, parent = [root], {root: None}
    queue = deque([root])
    while queue:
        atom = queue.popleft()
        children = sorted((o for o in neighbours[atom] if o not in parent), key=lambda o: (elements[o] == "H", o))
        for child in children:
            parent[child] = atom
            order.append(child)
            queue.append(child)
    return order, parent


def build_zmatrix(neighbours, elements):
    """Placement order and (i, j, k, l) references of every atom after the first three.

    Returns
    -------
    order : list of int
    references : list of tuple
        (i, j, k, l) for atoms order[3:], with j bonded to i and j, k, l placed before i.
    second_reference : int
        The atom (order[0] or order[1]) that order[2] is bonded to.
    """
    if len(neighbours) < 3:
        raise ValueError("InternalCoordinates needs at least 3 atoms")
    order, parent = _placement_order(neighbours, elements)
    rank = {atom: position for position, atom in enumerate(order)}
    second_reference = parent[order[2]]
    references = []
    for i in order[3:]:
        j = parent[i]
        placed = lambda atom: rank[atom] < rank[i]  # noqa: E731
        k = parent[j] if parent[j] is not None else min((a for a in neighbours[j] if placed(a) and a != i), key=rank.get)
        candidates = [parent[k]] if parent[k] is not None and parent[k] != j else []
        candidates += sorted((a for a in neighbours[k] if placed(a) and a not in (i, j)), key=rank.get)
        candidates += sorted((a for a in neighbours[j] if placed(a) and a not in (i, k)), key=rank.get)
        if not candidates:
            raise ValueError(f"no torsion reference for atom {i}")
        references.append((i, j, k, candidates[0]))
    return order, references, second_reference


def chiral_centres(neighbours, elements):
    """Atoms with four bonded neighbours of four different graph classes.

    Classes come from iterated neighbour refinement (Morgan) starting from
    element and degree, so a CH2 group (glycine's CA) or a methyl carbon is
    not chiral, and alanine's CA is.

    Returns
    -------
    list of (centre, (a, b, c)) : three neighbours ordered by class
    """
    labels = [f"{elements[i]}{len(neighbours[i])}" for i in range(len(neighbours))]
    for _ in range(len(neighbours)):
        refined = [labels[i] + "(" + ",".join(sorted(labels[n] for n in neighbours[i])) + ")" for i in range(len(neighbours))]
        classes = {label: index for index, label in enumerate(sorted(set(refined)))}
        refined = [str(classes[label]) for label in refined]
        if len(set(refined)) == len(set(labels)):
            break
        labels = refined
    centres = []
    for atom, bonded in enumerate(neighbours):
        if len(bonded) == 4 and len({labels[b] for b in bonded}) == 4:
            a, b, c, _ = sorted(bonded, key=lambda n: (labels[n], n))
            centres.append((atom, (a, b, c)))
    return centres


def rotor_hydrogen_groups(neighbours, elements, references):
    """Candidate rotor groups: three graph-equivalent H on one atom with four neighbours.

    Returns
    -------
    list of (hydrogens, torsion_indices)
        ``hydrogens`` in Z-matrix order; ``torsion_indices`` their rows in
        ``references``. All three must share the same (j, k, l) references.
    """
    row = {ref[0]: m for m, ref in enumerate(references)}
    groups = []
    for atom, bonded in enumerate(neighbours):
        hydrogens = [b for b in bonded if elements[b] == "H" and not neighbours[b][1:]]
        if len(bonded) != 4 or len(hydrogens) != 3 or any(h not in row for h in hydrogens):
            continue
        rows = sorted(row[h] for h in hydrogens)
        if len({references[m][1:] for m in rows}) == 1:
            groups.append((tuple(references[m][0] for m in rows), tuple(rows)))
    return groups


def energy_invariant_groups(system, positions_nm, groups, tolerance_kj_per_mol=1e-6):
    """Keep the groups whose cyclic permutation leaves the OpenMM energy unchanged.

    Checked at two randomly perturbed copies of ``positions_nm`` (nm).
    """
    import openmm
    from openmm import unit

    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    rng = np.random.default_rng(0)

    def energy(x):
        context.setPositions(x)
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    kept = []
    for hydrogens, rows in groups:
        invariant = True
        for _ in range(2):
            x = np.asarray(positions_nm, dtype=float) + rng.normal(0.0, 0.005, size=np.shape(positions_nm))
            permuted = x.copy()
            permuted[list(hydrogens)] = x[[hydrogens[1], hydrogens[2], hydrogens[0]]]
            reference = energy(x)
            invariant &= abs(energy(permuted) - reference) <= tolerance_kj_per_mol * max(1.0, abs(reference))
        if invariant:
            kept.append((hydrogens, rows))
    return kept


def signed_volumes(positions, centres):
    """Signed volume (nm^3) of each chiral centre's three reference neighbours, (n, n_centres)."""
    if not centres:
        return positions.new_zeros(positions.shape[0], 0)
    centre = torch.tensor([c for c, _ in centres])
    a, b, c = (torch.tensor([n[m] for _, n in centres]) for m in range(3))
    origin = positions[:, centre]
    return torch.linalg.det(torch.stack([positions[:, a] - origin, positions[:, b] - origin, positions[:, c] - origin], dim=-1))


def largest_gap_midpoint(angles):
    """Middle (rad, in (-pi, pi]) of the largest circular gap between sorted angles."""
    ordered = np.sort(np.asarray(angles, dtype=float))
    if len(ordered) == 0:
        return -math.pi
    gaps = np.diff(np.concatenate([ordered, [ordered[0] + 2 * math.pi]]))
    widest = int(np.argmax(gaps))
    middle = ordered[widest] + 0.5 * gaps[widest]
    return float(math.remainder(middle, 2 * math.pi))


def _angle(a, b, c):
    """Angle at b (rad)."""
    u, v = a - b, c - b
    return torch.atan2(torch.linalg.norm(torch.cross(u, v, dim=-1), dim=-1), (u * v).sum(-1))


def _dihedral(a, b, c, d):
    """Dihedral a-b-c-d in (-pi, pi] (IUPAC sign convention)."""
    b0, b1, b2 = a - b, c - b, d - c
    b1n = b1 / torch.linalg.norm(b1, dim=-1, keepdim=True)
    v = b0 - (b0 * b1n).sum(-1, keepdim=True) * b1n
    w = b2 - (b2 * b1n).sum(-1, keepdim=True) * b1n
    x = (v * w).sum(-1)
    y = (torch.cross(b1n, v, dim=-1) * w).sum(-1)
    return torch.atan2(y, x)


def _place(j, k, l, r, theta, phi):
    """Position of i with |i-j| = r, angle(i, j, k) = theta, dihedral(i, j, k, l) = phi (NeRF)."""
    bc = k - j
    bc = bc / torch.linalg.norm(bc, dim=-1, keepdim=True)
    normal = torch.cross(l - k, bc, dim=-1)
    normal = normal / torch.linalg.norm(normal, dim=-1, keepdim=True)
    m = torch.cross(normal, bc, dim=-1)
    r, theta, phi = r.unsqueeze(-1), theta.unsqueeze(-1), phi.unsqueeze(-1)
    return j + r * (torch.cos(theta) * bc + torch.sin(theta) * (torch.sin(phi) * normal - torch.cos(phi) * m))


def bond_graph_from_system(system):
    """Adjacency lists and mass-based element labels from a System's HarmonicBondForce.

    With ``constraints=None`` every chemical bond of a force-field System is a
    harmonic bond, so the System alone defines the Z-matrix. Atoms lighter
    than 1.5 amu are labelled "H"; others by their rounded mass.
    """
    import openmm

    n_atoms = system.getNumParticles()
    neighbours = [set() for _ in range(n_atoms)]
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for index in range(force.getNumBonds()):
                a, b, *_ = force.getBondParameters(index)
                neighbours[a].add(b)
                neighbours[b].add(a)
    masses = [system.getParticleMass(i).value_in_unit(openmm.unit.amu) for i in range(n_atoms)]
    elements = ["H" if m < 1.5 else f"M{round(m)}" for m in masses]
    return [sorted(n) for n in neighbours], elements


class _GraphTopology:
    """The minimum of a Topology that InternalCoordinates reads: bonds and elements."""

    def __init__(self, neighbours, elements):
        self.neighbours, self.elements = neighbours, elements


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
        if isinstance(topology, _GraphTopology):
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
        return cls(_GraphTopology(*bond_graph_from_system(system)), reference_positions, torsion_cuts, system=system,
                   relative_sibling_torsions=relative_sibling_torsions, torsion_widths=torsion_widths)

    @property
    def n_features(self):
        return 3 * self.n_atoms - 6

    def fit(self, positions):
        """Fit the torsion windows on data (``fit_torsion_cuts``), rotor windows first."""
        positions = as_positions_tensor(positions, self.n_atoms)
        self.fit_rotor_windows(positions)
        self.fit_torsion_cuts(self.relabel(positions, np.random.default_rng(0)))

    def fit_rotor_windows(self, positions, coverage=0.999):
        """Place and size each rotor window W on data.

        W starts at a barrier, the middle of the largest gap of the group's
        pooled H torsions. Its width is the ``coverage`` quantile of the
        largest angular gap between the group's hydrogens (clipped to
        [120, 170] degrees): a window at least that wide holds a hydrogen in
        that share of the data, whatever its start, and a window no wider
        ends near the next barrier, where the relabelled density is low,
        instead of inside a well, where a sharp edge makes the model put
        candidates outside it.
        """
        torsions = self.raw_torsions(positions).numpy()
        for _, rows in self.rotor_groups:
            group = torsions[:, list(rows)]
            self.torsion_cuts[rows[0]] = largest_gap_midpoint(group.ravel())
            ordered = np.sort(np.remainder(group, 2 * math.pi), axis=1)
            gaps = np.diff(np.concatenate([ordered, ordered[:, :1] + 2 * math.pi], axis=1), axis=1)
            width = np.quantile(gaps.max(axis=1), coverage) if len(group) else ROTOR_WINDOW
            self.torsion_widths[rows[0]] = float(np.clip(width, MIN_ROTOR_WINDOW, ROTOR_WINDOW))

    def _in_rotor_window(self, positions):
        """(n, n_groups, 3) bool: which hydrogen of each group has its torsion inside W."""
        torsions = self.raw_torsions(positions)
        flags = []
        for _, rows in self.rotor_groups:
            cut, width = self.torsion_cuts[rows[0]], self.torsion_widths[rows[0]]
            flags.append(torch.remainder(torsions[:, list(rows)] - cut, 2 * math.pi) < width)
        return torch.stack(flags, dim=1) if flags else torch.zeros(len(positions), 0, 3, dtype=torch.bool)

    def log_multiplicity(self, positions):
        """log n(z) summed over rotor groups, (n,); -inf where a group has no hydrogen in W
        or the first hydrogen is outside W (z not in Z)."""
        positions = as_positions_tensor(positions, self.n_atoms)
        inside = self._in_rotor_window(positions)
        counts = inside.sum(-1).to(torch.float64)
        first_inside = inside[..., 0].all(-1)
        return torch.where(first_inside, torch.log(counts).sum(-1), -torch.inf)

    def relabel(self, positions, rng):
        """Uniformly random valid cyclic relabelling of every rotor group (the kernel R).

        Groups with no hydrogen inside W are left as they are (then z is not in Z).

        Parameters
        ----------
        positions : array_like, (n, N, 3), nm
        rng : numpy.random.Generator
        """
        positions = as_positions_tensor(positions, self.n_atoms).clone()
        if not self.rotor_groups:
            return positions
        inside = self._in_rotor_window(positions).numpy()
        samples = np.arange(len(positions))[:, None]
        for g, (hydrogens, _) in enumerate(self.rotor_groups):
            keys = np.where(inside[:, g], rng.random(inside[:, g].shape), -1.0)
            shift = np.where(inside[:, g].any(-1), np.argmax(keys, axis=-1), 0)  # uniform among inside
            order = np.asarray(hydrogens)[(shift[:, None] + np.arange(3)) % 3]
            positions[:, list(hydrogens)] = positions[samples, order]
        return positions

    @property
    def n_torsions(self):
        return len(self.references)

    def torsion_feature_indices(self):
        """Columns of the torsions in the feature vector."""
        return [3 + 3 * m + 2 for m in range(self.n_torsions)]

    def frame(self, positions):
        """Positions of the first three placed atoms, (n, 9), nm."""
        positions = as_positions_tensor(positions, self.n_atoms)
        return positions[:, self.order[:3]].reshape(positions.shape[0], 9)

    def raw_torsions(self, positions):
        """Torsions in (-pi, pi], (n, n_torsions), rad."""
        positions = as_positions_tensor(positions, self.n_atoms)
        return _dihedral(*(positions[:, index] for index in (self._i, self._j, self._k, self._l)))

    def feature_torsions(self, positions):
        """The torsion features before windowing: sibling torsions relative to
        their first sibling, in (-pi, pi], (n, n_torsions), rad."""
        return _wrap(self._relative_to_siblings(self.raw_torsions(positions)))

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
        theta2 = _angle(positions[:, a2], positions[:, s], positions[:, other])
        i, j, k, l = (positions[:, index] for index in (self._i, self._j, self._k, self._l))
        r = torch.linalg.norm(i - j, dim=-1)
        theta = _angle(i, j, k)
        phi = self._relative_to_siblings(_dihedral(i, j, k, l))
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
        positions[a2] = _place(positions[s], positions[other], _plane_point(frame), safe[:, 1], safe[:, 2], torch.full_like(safe[:, 1], math.pi))
        rest = safe[:, 3:].reshape(n, -1, 3)
        torsions = self._absolute_from_siblings(rest[..., 2])
        for m, (i, j, k, l) in enumerate(self.references):
            positions[i] = _place(positions[j], positions[k], positions[l], rest[:, m, 0], rest[:, m, 1], torsions[:, m])
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


def sibling_reference_rows(references, relative=True):
    """For each Z-matrix row, the row of its first sibling (same j, k, l), or -1.

    The first row of each sibling set (and every row when ``relative`` is
    False) maps to -1: its torsion stays absolute.

    Returns
    -------
    torch.Tensor, (n_rows,), long
    """
    first = {}
    rows = []
    for m, (_, j, k, l) in enumerate(references):
        key = (j, k, l)
        rows.append(first[key] if relative and key in first else -1)
        first.setdefault(key, m)
    return torch.tensor(rows, dtype=torch.long)


def _wrap(angles):
    """Angles into (-pi, pi]."""
    return math.pi - torch.remainder(math.pi - angles, 2 * math.pi)


def _plane_point(frame):
    """A point that puts atom 2 on the same side of the 0-1 axis as in the frame.

    With dihedral pi about (2, j, k, l), atom 2 lies in the plane of j, k, l
    on the side opposite to l; so l is the reflection of the frame's atom 2
    through the 0-1 axis.
    """
    x0, x1, x2 = frame[:, 0], frame[:, 1], frame[:, 2]
    axis = (x1 - x0) / torch.linalg.norm(x1 - x0, dim=-1, keepdim=True)
    relative = x2 - x0
    along = (relative * axis).sum(-1, keepdim=True) * axis
    return x0 + along - (relative - along)
