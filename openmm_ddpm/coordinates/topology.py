"""The Z-matrix of a molecule from its bond graph: placement order, references, chiral centres.

The bond graph comes from an OpenMM or mdtraj Topology (``bond_graph``) or
from a System's harmonic bonds (``bond_graph_from_system``); everything
here is combinatorics on adjacency lists, with no geometry. Imports
nothing of the package.
"""
from collections import deque

import torch


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


def zmatrix_bonds(order, references, second_reference):
    """The bonds that are features of a Z-matrix, in feature order: (i, j) pairs.

    Rows of ``build_zmatrix``: r(order[1]-order[0]), r(order[2]-second_reference),
    then the bond of every further atom to its first reference. Bonds that
    close a ring are not features.
    """
    return [(order[1], order[0]), (order[2], second_reference)] + [(i, j) for i, j, _, _ in references]


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


def bond_graph_from_system(system):
    """Adjacency lists and mass-based element labels from a System's harmonic bonds and constraints.

    A force-field System has every chemical bond either as a harmonic bond
    or, when it is constrained (``constraints=HBonds``), as a distance
    constraint, so the System alone defines the Z-matrix. Atoms lighter
    than 1.5 amu are labelled "H"; others by their rounded mass.
    """
    import openmm

    n_atoms = system.getNumParticles()
    neighbours = [set() for _ in range(n_atoms)]
    pairs = [system.getConstraintParameters(index)[:2] for index in range(system.getNumConstraints())]
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            pairs += [force.getBondParameters(index)[:2] for index in range(force.getNumBonds())]
    for a, b in pairs:
        neighbours[a].add(b)
        neighbours[b].add(a)
    masses = [system.getParticleMass(i).value_in_unit(openmm.unit.amu) for i in range(n_atoms)]
    elements = ["H" if m < 1.5 else f"M{round(m)}" for m in masses]
    return [sorted(n) for n in neighbours], elements


class GraphTopology:
    """The minimum of a Topology that InternalCoordinates reads: bonds and elements."""

    def __init__(self, neighbours, elements):
        self.neighbours, self.elements = neighbours, elements


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


def connected_components(neighbours):
    """Atom index lists of the bond graph's connected components, each sorted, ordered by first atom."""
    seen, components = set(), []
    for start in range(len(neighbours)):
        if start in seen:
            continue
        seen.add(start)
        component, queue = [], deque([start])
        while queue:
            atom = queue.popleft()
            component.append(atom)
            for other in neighbours[atom]:
                if other not in seen:
                    seen.add(other)
                    queue.append(other)
        components.append(sorted(component))
    return components
