"""Peptide backbone dihedrals (mdtraj) and free-energy surfaces over them."""
import numpy as np


def backbone_dihedrals(positions_nm, topology):
    """phi and psi (rad) of every frame with mdtraj, (n_frames, n_phi) and (n_frames, n_psi).

    Parameters
    ----------
    positions_nm : array_like, (n_frames, n_atoms, 3), nm
    topology : openmm.app.Topology or mdtraj.Topology
    """
    import mdtraj

    if not isinstance(topology, mdtraj.Topology):
        topology = mdtraj.Topology.from_openmm(topology)
    trajectory = mdtraj.Trajectory(np.asarray(positions_nm, dtype=np.float32).reshape(-1, topology.n_atoms, 3), topology)
    _, phi = mdtraj.compute_phi(trajectory)
    _, psi = mdtraj.compute_psi(trajectory)
    return phi, psi


def free_energy_surface(phi, psi, bins=36, weights=None):
    """Free-energy surface F(phi, psi) in kT from dihedral samples, minimum at 0.

    Parameters
    ----------
    phi, psi : array_like, (n,), rad
    bins : int
        Bins per axis over [-pi, pi).
    weights : array_like, (n,), optional
        Sample weights (importance weights of model samples); equal when None.

    Returns
    -------
    free_energy : numpy.ndarray, (bins, bins)
        -ln p per bin (kT), inf where the bin is empty; ``[i, j]`` is phi bin i, psi bin j.
    edges : numpy.ndarray, (bins + 1,), rad
    """
    edges = np.linspace(-np.pi, np.pi, bins + 1)
    counts, _, _ = np.histogram2d(np.asarray(phi), np.asarray(psi), bins=[edges, edges], weights=weights)
    with np.errstate(divide="ignore"):
        free_energy = -np.log(counts / counts.sum())
    return free_energy - free_energy[np.isfinite(free_energy)].min(), edges
