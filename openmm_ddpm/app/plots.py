"""PNG figures of a run: free-energy surfaces and proposal statistics over time (matplotlib)."""
import numpy as np

from openmm_ddpm.analysis import free_energy_surface


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_free_energy_surfaces(phi, psi, temperatures_kelvin, path, bins=36, max_kt=8.0):
    """One Ramachandran free-energy panel per temperature.

    Parameters
    ----------
    phi, psi : numpy.ndarray, (n_samples, n_states), rad
    temperatures_kelvin : array_like, (n_states,)
    path : str
        PNG file to write.
    bins : int
        Bins per axis (36: 10 degrees).
    max_kt : float
        Colour scale limit (kT); emptier bins (and empty ones) are left white.
    """
    plt = _pyplot()
    n_states = len(temperatures_kelvin)
    figure, axes = plt.subplots(1, n_states, figsize=(3.0 * n_states + 1.2, 3.3), squeeze=False, sharey=True,
                                layout="constrained")
    image = None
    for k, axis in enumerate(axes[0]):
        free_energy, edges = free_energy_surface(phi[:, k], psi[:, k], bins=bins)
        degrees = np.degrees(edges)
        image = _free_energy_panel(axis, degrees, degrees, free_energy, max_kt)
        axis.set_title(f"{temperatures_kelvin[k]:.0f} K ({len(phi)} samples)")
        axis.set_xlabel("phi (deg)")
        axis.axvline(0.0, color="white", lw=0.5, ls="--")
    axes[0, 0].set_ylabel("psi (deg)")
    figure.colorbar(image, ax=axes[0].tolist(), label="F (kT)")
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _free_energy_panel(axis, x_edges, y_edges, free_energy, max_kt):
    """One free-energy histogram (kT, [i, j] is x bin i, y bin j); bins above ``max_kt`` and empty ones left white."""
    return axis.pcolormesh(x_edges, y_edges, np.ma.masked_where(~(free_energy <= max_kt), free_energy).T,
                           vmin=0.0, vmax=max_kt, cmap="viridis")


def _windowed(values, window):
    """Mean over a trailing window of the finite values (NaN where there are none)."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    sums = np.convolve(np.where(finite, values, 0.0), np.ones(window), mode="full")[: len(values)]
    counts = np.convolve(finite.astype(float), np.ones(window), mode="full")[: len(values)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def plot_proposal_statistics(statistics, path, window=25, n_target_states=1):
    """Acceptance, ESS fraction, invalid fraction and training loss against iteration.

    Parameters
    ----------
    statistics : dict
        From ``openmm_ddpm.read_ddpm_statistics``.
    path : str
        PNG file to write.
    window : int
        Iterations in the trailing-mean window.
    n_target_states : int
        Proposal moves per proposing iteration.
    """
    plt = _pyplot()
    iterations = np.arange(len(statistics["ddpm_phase"]))
    proposing = statistics["ddpm_n_candidates"] > 0
    per_move = np.where(proposing, statistics["ddpm_n_accepted"] / n_target_states, np.nan)
    invalid = np.where(proposing, statistics["ddpm_n_invalid"] / np.maximum(statistics["ddpm_n_candidates"], 1), np.nan)
    panels = [
        ("acceptance per move", _windowed(per_move, window)),
        ("ESS / (K + 1)", _windowed(statistics["ddpm_ess_fraction"], window)),
        ("candidates outside the domain", _windowed(invalid, window)),
        ("training loss", statistics["ddpm_training_loss"]),
    ]
    figure, axes = plt.subplots(len(panels), 1, figsize=(7, 8), sharex=True)
    production = np.flatnonzero(statistics["ddpm_phase"] == 1)
    for axis, (label, values) in zip(axes, panels):
        axis.plot(iterations, values, lw=1.0)
        axis.set_ylabel(label)
        if len(production):
            axis.axvline(production[0], color="k", ls=":", lw=1.0)
    axes[0].set_title(f"proposal statistics ({window}-iteration trailing mean; dotted: model frozen)")
    axes[-1].set_xlabel("iteration")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_basin_changes(iterations, phi, temperatures_kelvin, path, production_start=None):
    """phi of the target state over the run, and the cumulative basin changes (sign flips of phi) per state.

    Parameters
    ----------
    iterations : numpy.ndarray of int, (n,)
    phi : numpy.ndarray, (n, n_states), rad
        Backbone phi of each state's configuration after each iteration.
    temperatures_kelvin : array_like, (n_states,)
    path : str
        PNG file to write.
    production_start : int, optional
        First production iteration (a dotted line).
    """
    plt = _pyplot()
    figure, axes = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    axes[0].plot(iterations, np.degrees(phi[:, 0]), ".", ms=1.5)
    axes[0].set_ylabel(f"phi at {temperatures_kelvin[0]:.0f} K (deg)")
    axes[0].axhline(0.0, color="grey", lw=0.5)
    changes = np.vstack([np.zeros((1, phi.shape[1])), np.diff(phi > 0, axis=0)]).cumsum(axis=0)
    for k, kelvin in enumerate(temperatures_kelvin):
        axes[1].plot(iterations, changes[:, k], lw=1.0, label=f"{kelvin:.0f} K")
    axes[1].set_ylabel("basin changes (phi sign), cumulative")
    axes[1].set_xlabel("iteration")
    axes[1].legend(fontsize=7, ncol=2)
    for axis in axes:
        if production_start is not None:
            axis.axvline(production_start, color="k", ls=":", lw=1.0)
    axes[0].set_title("basin changes of each state's configuration (dotted: model frozen)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_model_beside_replicas(replica_dihedrals, model_dihedrals, model_weights, kelvin, path, bins=36, max_kt=8.0):
    """Free-energy surfaces at one temperature: the replicas' samples, the raw model samples, and reweighted.

    Parameters
    ----------
    replica_dihedrals, model_dihedrals : tuple of numpy.ndarray
        (phi, psi) in rad of the stored configurations and of the model samples.
    model_weights : numpy.ndarray
        Normalized importance weights of the model samples (Boltzmann over exact model density).
    kelvin : float
    path : str
    """
    plt = _pyplot()
    panels = [(f"replicas ({len(replica_dihedrals[0])} samples)", replica_dihedrals, None),
              (f"model ({len(model_dihedrals[0])} samples)", model_dihedrals, None),
              (f"model reweighted (ESS {1.0 / np.sum(model_weights ** 2):.0f})", model_dihedrals, model_weights)]
    figure, axes = plt.subplots(1, 3, figsize=(10.2, 3.4), sharey=True, layout="constrained")
    image = None
    for axis, (title, (phi, psi), weights) in zip(axes, panels):
        free_energy, edges = free_energy_surface(phi, psi, bins=bins, weights=weights)
        degrees = np.degrees(edges)
        image = _free_energy_panel(axis, degrees, degrees, free_energy, max_kt)
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("phi (deg)")
        axis.axvline(0.0, color="white", lw=0.5, ls="--")
    axes[0].set_ylabel(f"psi (deg), {kelvin:.0f} K")
    figure.colorbar(image, ax=axes.tolist(), label="F (kT)")
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_collective_variables(values, cvs, temperatures_kelvin, path, bins=36, max_kt=8.0):
    """Free energy over the user's collective variables per temperature: profiles (one CV) or surfaces (two).

    Parameters
    ----------
    values : numpy.ndarray, (n_samples, n_states, n_cvs)
        nm for distances, degrees for angles and dihedrals (``analysis.collective``).
    cvs : list of tuple of int
        The atom indices of each collective variable.
    temperatures_kelvin : array_like, (n_states,)
    path : str
    """
    from openmm_ddpm.analysis.collective import KINDS, UNITS, free_energy_profile, histogram_edges

    plt = _pyplot()
    labels = [f"{KINDS[len(atoms)]} {'-'.join(map(str, atoms))} ({UNITS[KINDS[len(atoms)]]})" for atoms in cvs]
    edges = [histogram_edges(atoms, values[:, :, i], bins) for i, atoms in enumerate(cvs)]
    n_states = len(temperatures_kelvin)
    if len(cvs) == 1:
        figure, axis = plt.subplots(figsize=(6.5, 4))
        centres = 0.5 * (edges[0][1:] + edges[0][:-1])
        for k, kelvin in enumerate(temperatures_kelvin):
            axis.plot(centres, free_energy_profile([values[:, k, 0]], edges), lw=1.2, label=f"{kelvin:.0f} K")
        axis.set_xlabel(labels[0])
        axis.set_ylabel("F (kT)")
        axis.set_ylim(0.0, max_kt)
        axis.legend(fontsize=7, ncol=2)
    else:
        figure, axes = plt.subplots(1, n_states, figsize=(3.0 * n_states + 1.2, 3.3), squeeze=False, sharey=True,
                                    layout="constrained")
        image = None
        for k, axis in enumerate(axes[0]):
            free_energy = free_energy_profile([values[:, k, 0], values[:, k, 1]], edges)
            image = _free_energy_panel(axis, edges[0], edges[1], free_energy, max_kt)
            axis.set_title(f"{temperatures_kelvin[k]:.0f} K", fontsize=9)
            axis.set_xlabel(labels[0], fontsize=8)
        axes[0, 0].set_ylabel(labels[1], fontsize=8)
        figure.colorbar(image, ax=axes[0].tolist(), label="F (kT)")
    figure.savefig(path, dpi=120)
    plt.close(figure)
