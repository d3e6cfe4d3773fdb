"""Collective variables chosen by the user: distances, angles and dihedrals of atom indices, and their free energies."""
import numpy as np

KINDS = {2: "distance", 3: "angle", 4: "dihedral"}
UNITS = {"distance": "nm", "angle": "deg", "dihedral": "deg"}


def parse_collective_variable(text, n_atoms, option="--cv"):
    """'4,6,8,14' -> (4, 6, 8, 14): 2 atoms a distance, 3 an angle, 4 a dihedral (0-based indices).

    Raises
    ------
    ValueError
        One line naming the problem and the fix (``option``: the command-line option it came from).
    """
    try:
        atoms = tuple(int(part) for part in str(text).replace(" ", "").split(","))
    except ValueError:
        raise ValueError(f"{option} {text!r}: give 2, 3 or 4 comma-separated atom indices, e.g. 4,6,8,14") from None
    if len(atoms) not in KINDS:
        raise ValueError(f"{option} {text!r}: {len(atoms)} atoms; a distance takes 2, an angle 3, a dihedral 4")
    if min(atoms) < 0 or max(atoms) >= n_atoms or len(set(atoms)) != len(atoms):
        raise ValueError(f"{option} {text!r}: the indices must be distinct and in 0..{n_atoms - 1} (0-based)")
    return atoms


def collective_variable_values(positions_nm, topology, atoms):
    """The collective variable of every frame: nm for a distance, degrees for an angle or dihedral.

    Parameters
    ----------
    positions_nm : array_like, (n_frames, n_atoms, 3), nm
    topology : openmm.app.Topology or mdtraj.Topology
    atoms : tuple of int
        2, 3 or 4 atom indices (``parse_collective_variable``).
    """
    import mdtraj

    if not isinstance(topology, mdtraj.Topology):
        topology = mdtraj.Topology.from_openmm(topology)
    trajectory = mdtraj.Trajectory(np.asarray(positions_nm, dtype=np.float32).reshape(-1, topology.n_atoms, 3), topology)
    indices = np.array([atoms])
    kind = KINDS[len(atoms)]
    if kind == "distance":
        return mdtraj.compute_distances(trajectory, indices)[:, 0].astype(float)
    compute = mdtraj.compute_angles if kind == "angle" else mdtraj.compute_dihedrals
    return np.degrees(compute(trajectory, indices)[:, 0].astype(float))


def histogram_edges(atoms, values, bins):
    """Bin edges of a collective variable: the full circle for dihedrals, [0, 180] for angles, the data's range else."""
    kind = KINDS[len(atoms)]
    if kind == "dihedral":
        return np.linspace(-180.0, 180.0, bins + 1)
    if kind == "angle":
        return np.linspace(0.0, 180.0, bins + 1)
    finite = np.asarray(values)[np.isfinite(values)]
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    return np.linspace(low, high + 1e-9 * max(abs(high), 1.0), bins + 1)


def free_energy_profile(values, edges):
    """-ln p per bin (kT, minimum 0; inf where empty) of one or two collective variables.

    Parameters
    ----------
    values : list of numpy.ndarray
        One or two arrays (n,), the samples' collective variables.
    edges : list of numpy.ndarray
        Their bin edges.
    """
    counts, _ = np.histogramdd(np.column_stack(values), bins=edges)
    with np.errstate(divide="ignore"):
        free_energy = -np.log(counts / counts.sum())
    return free_energy - free_energy[np.isfinite(free_energy)].min()
