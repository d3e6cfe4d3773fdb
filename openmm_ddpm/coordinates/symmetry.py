"""Equivalent atoms: rotor groups whose permutation leaves the energy unchanged.

A methyl-type rotor (three graph-equivalent hydrogens on one atom) makes
the Boltzmann density invariant under cyclic relabelling of its
hydrogens. The representation keeps one labelling of each group, the one
whose first hydrogen's torsion lies in a window W (``ROTOR_WINDOW`` wide at
most), and the proposal's density carries the multiplicity n(z), the
number of hydrogens inside W (DESIGN.md section 3; docs/exactness.md,
"Symmetric atoms"). ``relabel`` is the kernel R of the move: a uniformly
random valid relabelling, applied to the current state before each move.

Coordinates with symmetric atoms implement ``SymmetricCoordinates``;
every representation of the package does (Cartesian and identity-only ones
with n = 1). Imports nothing of the package.
"""
import math
from typing import Protocol, runtime_checkable

import numpy as np
import torch

ROTOR_WINDOW = math.radians(170.0)  # widest rotor window, and the width before fitting
MIN_ROTOR_WINDOW = 2 * math.pi / 3


@runtime_checkable
class SymmetricCoordinates(Protocol):
    """What a proposal needs of coordinates with equivalent atoms."""

    def relabel(self, positions, rng):
        """A uniformly random valid relabelling of every symmetric group, positions (n, N, 3) nm."""

    def log_multiplicity(self, positions):
        """log n(z), the number of valid labellings of each configuration, (n,); -inf outside the domain."""


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

    Checked at two perturbed copies of ``positions_nm`` (nm), displaced by a
    fixed irregular pattern of up to 5 pm (no random numbers: the same
    groups on every call). The answer is kept per System and arguments, so
    the check's OpenMM Context is made once: the samplers ask for it before
    the first MD step (``OnlineLearner.prepare``), because on the Reference
    platform a Context made mid-run changes the random stream of the
    Langevin dynamics from then on (measured: a seeded alanine dipeptide run
    parted from its repeat at the first training round; with the check done
    before the dynamics, it repeats).
    """
    key = (np.asarray(positions_nm, dtype=float).tobytes(), tuple(groups), tolerance_kj_per_mol)
    cached = _INVARIANT_GROUPS.get(id(system))
    if cached is not None and cached[0] is system and key in cached[1]:
        return list(cached[1][key])
    kept = _check_energy_invariance(system, positions_nm, groups, tolerance_kj_per_mol)
    if cached is None or cached[0] is not system:
        cached = _INVARIANT_GROUPS[id(system)] = (system, {})
    cached[1][key] = tuple(kept)
    return kept


_INVARIANT_GROUPS = {}  # id(system) -> (system, {arguments: groups}); see energy_invariant_groups


def _check_energy_invariance(system, positions_nm, groups, tolerance_kj_per_mol):
    import openmm
    from openmm import unit

    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))

    def energy(x):
        context.setPositions(x)
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)

    kept = []
    for hydrogens, rows in groups:
        invariant = True
        for copy in range(2):
            x = np.asarray(positions_nm, dtype=float) + _perturbation(np.shape(positions_nm), copy)
            permuted = x.copy()
            permuted[list(hydrogens)] = x[[hydrogens[1], hydrogens[2], hydrogens[0]]]
            reference = energy(x)
            invariant &= abs(energy(permuted) - reference) <= tolerance_kj_per_mol * max(1.0, abs(reference))
        if invariant:
            kept.append((hydrogens, rows))
    return kept

def _perturbation(shape, copy, size_nm=0.005):
    """A deterministic, irregular displacement pattern (nm) of the given shape."""
    index = np.arange(int(np.prod(shape)), dtype=float).reshape(shape)
    return size_nm * np.sin((index + 1.0) * (2.0 + copy) * (1.0 + 5 ** 0.5) / 2.0)


def fit_rotor_window(group_torsions, coverage=0.999):
    """Start and width (rad) of one rotor group's window W, fitted on data.

    W starts at a barrier, the middle of the largest gap of the group's
    pooled H torsions. Its width is the ``coverage`` quantile of the
    largest angular gap between the group's hydrogens (clipped to
    [120, 170] degrees): a window at least that wide holds a hydrogen in
    that share of the data, whatever its start, and a window no wider
    ends near the next barrier, where the relabelled density is low,
    instead of inside a well, where a sharp edge makes the model put
    candidates outside it.

    Parameters
    ----------
    group_torsions : numpy.ndarray, (n, 3), rad
        The torsions of the group's three hydrogens in n configurations.
    """
    from openmm_ddpm.coordinates.geometry import largest_gap_midpoint

    ordered = np.sort(np.remainder(group_torsions, 2 * math.pi), axis=1)
    gaps = np.diff(np.concatenate([ordered, ordered[:, :1] + 2 * math.pi], axis=1), axis=1)
    width = np.quantile(gaps.max(axis=1), coverage) if len(group_torsions) else ROTOR_WINDOW
    return largest_gap_midpoint(group_torsions.ravel()), float(np.clip(width, MIN_ROTOR_WINDOW, ROTOR_WINDOW))


def in_rotor_windows(torsions, groups, cuts, widths):
    """(n, n_groups, 3) bool: which hydrogen of each group has its torsion inside its group's W.

    Parameters
    ----------
    torsions : torch.Tensor, (n, n_torsions), rad
    groups : list of (hydrogens, rows)
    cuts, widths : torch.Tensor, (n_torsions,), rad
        Window start and width of each torsion row (a group uses its first row's).
    """
    flags = []
    for _, rows in groups:
        cut, width = cuts[rows[0]], widths[rows[0]]
        flags.append(torch.remainder(torsions[:, list(rows)] - cut, 2 * math.pi) < width)
    return torch.stack(flags, dim=1) if flags else torch.zeros(len(torsions), 0, 3, dtype=torch.bool)


def log_multiplicity(inside):
    """log n(z) summed over groups, (n,), from ``in_rotor_windows``' flags;
    -inf where a group has no hydrogen in W or its first hydrogen is outside W (z not in Z)."""
    counts = inside.sum(-1).to(torch.float64)
    first_inside = inside[..., 0].all(-1)
    return torch.where(first_inside, torch.log(counts).sum(-1), -torch.inf)


def relabel_rotors(positions, groups, inside, rng):
    """Uniformly random valid cyclic relabelling of every rotor group (the kernel R), in place.

    Groups with no hydrogen inside W are left as they are (then z is not in Z).

    Parameters
    ----------
    positions : torch.Tensor, (n, N, 3), nm
    groups : list of (hydrogens, rows)
    inside : numpy.ndarray, (n, n_groups, 3) bool
        ``in_rotor_windows`` of ``positions``.
    rng : numpy.random.Generator
    """
    samples = np.arange(len(positions))[:, None]
    for g, (hydrogens, _) in enumerate(groups):
        keys = np.where(inside[:, g], rng.random(inside[:, g].shape), -1.0)
        shift = np.where(inside[:, g].any(-1), np.argmax(keys, axis=-1), 0)  # uniform among inside
        order = np.asarray(hydrogens)[(shift[:, None] + np.arange(3)) % 3]
        positions[:, list(hydrogens)] = positions[samples, order]
    return positions
