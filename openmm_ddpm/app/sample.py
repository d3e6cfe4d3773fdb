"""``openmm-ddpm sample DIR --temperature 280K -n 1000``: weighted model samples at any temperature, simulated or not.

The run's frozen model (``DIR/model.pt``) draws configurations at the
temperature with their exact log-density log q; each gets the importance
weight w = exp(-u_T(x)) / q(x | T), u_T the reduced potential there, so
weighted averages over the samples are Boltzmann averages at T (exact as
the number of samples grows; the Kish ESS says how many independent
samples they are worth). Written: the trajectory (DCD or PDB, by the
extension, via mdtraj) and beside it ``<name>.weights.csv`` with, per frame,
the normalized weight, log w, u_T (kT) and log q.

A solute-only model (``openmm-ddpm train`` on a solvated run) has no
Boltzmann factor to weigh its samples by (the water is not in the model):
its samples come as drawn, every weight equal and u_T NaN, ``Samples.reweighted``
False, and averages over them carry the model's error.
"""
import os
from dataclasses import dataclass

import numpy as np

from openmm_ddpm.app.config import ConfigError, load_config
from openmm_ddpm.app.run import CONFIG_NAME, MODEL_NAME, build_system

LOW_ESS = 50  # below this many effective samples a weighted average is not to be trusted
LOW_REGION_ESS = 20  # below this many effective draws inside a region its population is not to be trusted


@dataclass
class Samples:
    """Weighted samples: ``positions`` (n, N, 3) nm, ``log_weights``, ``reduced_potentials`` (kT), ``log_q``, ``ess``;
    ``reweighted`` False for a solute-only model's samples (equal weights: approximate, not Boltzmann)."""

    positions: np.ndarray
    log_weights: np.ndarray
    reduced_potentials: np.ndarray
    log_q: np.ndarray
    ess: float
    reweighted: bool = True

    @property
    def weights(self):
        """Normalized weights (sum 1; 0 outside the model's support)."""
        finite = np.isfinite(self.log_weights)
        w = np.zeros(len(self.log_weights))
        if finite.any():
            w[finite] = np.exp(self.log_weights[finite] - self.log_weights[finite].max())
            w /= w.sum()
        return w


def draw_weighted(directory, temperature, n_samples, seed=0, batch_size=64):
    """Draw ``n_samples`` from the run's model at ``temperature`` (openmm.unit.Quantity) with their weights."""
    from openmm import unit

    from openmm_ddpm.app.train import solute_columns
    from openmm_ddpm.multistate import load_exported_model

    model_path = os.path.join(directory, MODEL_NAME)
    if not os.path.exists(model_path):
        raise ConfigError(f"{model_path} not found: sample needs a run whose model was trained (openmm-ddpm run)")
    config = load_config(os.path.join(directory, CONFIG_NAME))
    system, positions, _ = build_system(config.system)
    model = load_exported_model(model_path, system)
    reference = positions.value_in_unit(unit.nanometer)
    if solute_columns(directory) is not None:  # the solute in vacuum is not the solvated ensemble: no weights
        return draw_unweighted(model, temperature, n_samples, reference, seed, batch_size)
    return weighted_draws(model, system, temperature, n_samples, reference, seed, batch_size)


def weighted_draws(model, system, temperature, n_samples, reference_nm, seed=0, batch_size=64):
    """``Samples`` of a loaded model at ``temperature``: log w = -u - log q (-inf outside the model's support)."""
    from openmm_ddpm.analysis import generate_with_densities
    from openmm_ddpm.moves.multiple_try import effective_sample_size

    samples, reduced, log_q = generate_with_densities(model, system, temperature, n_samples, reference_nm,
                                                      batch_size=batch_size, seed=seed)
    log_w = np.where(np.isfinite(log_q) & np.isfinite(reduced), -reduced - log_q, -np.inf)
    return Samples(np.asarray(samples), log_w, reduced, log_q, effective_sample_size(log_w))


def draw_unweighted(model, temperature, n_samples, reference, seed=0, batch_size=64):
    """A solute-only model's samples as drawn (its flow map, no density): equal weights, NaN u_T and log q."""
    import torch

    generator = torch.Generator().manual_seed(int(seed))
    drawn, valid = [], []
    for start in range(0, int(n_samples), batch_size):
        positions, inside = model.draw(min(batch_size, int(n_samples) - start), temperature, generator, reference)
        drawn.append(np.where(inside[:, None, None], positions, np.nan))
        valid.append(inside)
    valid = np.concatenate(valid)
    log_w = np.where(valid, 0.0, -np.inf)
    nan = np.full(len(valid), np.nan)
    return Samples(np.concatenate(drawn), log_w, nan, nan, float(valid.sum()), reweighted=False)


def write_samples(samples, directory, path):
    """The trajectory at ``path`` (.dcd or .pdb) and its weights at ``<path without extension>.weights.csv``.

    Draws outside the model's domain (weight 0, no structure) are left out of both files.
    """
    import mdtraj

    if os.path.splitext(path)[1].lower() not in (".dcd", ".pdb"):
        raise ConfigError(f"--out {path!r}: write a .dcd or a .pdb trajectory")
    topology = run_topology(directory)
    kept = np.all(np.isfinite(samples.positions), axis=(1, 2))  # draws outside the model's domain have no structure
    mdtraj.Trajectory(samples.positions[kept].astype(np.float32), mdtraj.Topology.from_openmm(topology)).save(path)
    weights_path = os.path.splitext(path)[0] + ".weights.csv"
    columns = [samples.weights, samples.log_weights, samples.reduced_potentials, samples.log_q]
    np.savetxt(weights_path, np.column_stack([column[kept] for column in columns]),
               delimiter=",", header="weight,log_weight,reduced_potential_kT,log_q", comments="")
    return weights_path


@dataclass(frozen=True)
class Region:
    """``low <= value < high`` of one collective variable (``atoms``: 2 a distance in nm, 3 an angle, 4 a dihedral,
    both in degrees), as the user wrote it (``text``)."""

    atoms: tuple
    low: float
    high: float
    text: str


@dataclass(frozen=True)
class RegionEstimate:
    """What the weighted samples say of a region: its ``population`` (Boltzmann probability at the samples'
    temperature) and delta-method ``error``, and what that rests on: the ``draws`` inside it and their Kish ``ess``."""

    region: Region
    population: float
    error: float
    draws: int
    ess: float

    @property
    def trusted(self):
        """False below ``LOW_REGION_ESS`` effective draws inside: the error bar then says little (a rare region's
        weight may sit where the model seldom draws)."""
        return self.ess >= LOW_REGION_ESS


def parse_region(text, n_atoms):
    """'4,6,8,14:0:180' (atoms:low:high) -> Region; a one-line error naming the fix otherwise."""
    from openmm_ddpm.analysis.collective import parse_collective_variable

    parts = str(text).replace(" ", "").split(":")
    if len(parts) != 3:
        raise ConfigError(f"--region {text!r}: write ATOMS:LOW:HIGH, e.g. --region 4,6,8,14:0:180 (phi > 0 of "
                          "alanine dipeptide; nm for a distance, degrees for an angle or dihedral)")
    try:
        atoms = parse_collective_variable(parts[0], n_atoms, option="--region")
        low, high = float(parts[1]), float(parts[2])
    except ValueError as error:
        message = str(error) if str(error).startswith("--region") else f"--region {text!r}: LOW and HIGH must be numbers"
        raise ConfigError(message) from None
    if not low < high:
        raise ConfigError(f"--region {text!r}: LOW must be below HIGH (a dihedral range across 180 degrees: give two "
                          "regions)")
    return Region(atoms, low, high, str(text))


def in_region(positions_nm, topology, region):
    """Whether each configuration (n, N, 3) nm lies in ``region``; False where it has no structure (NaN: a draw
    outside the model's domain, whose weight is 0)."""
    from openmm_ddpm.analysis.collective import collective_variable_values

    positions_nm = np.asarray(positions_nm)
    kept = np.all(np.isfinite(positions_nm), axis=(1, 2))
    inside = np.zeros(len(positions_nm), dtype=bool)
    values = collective_variable_values(positions_nm[kept], topology, region.atoms)
    inside[kept] = (values >= region.low) & (values < region.high)
    return inside


def region_estimate(samples, topology, region):
    """The ``RegionEstimate`` of ``region`` from weighted ``Samples`` of a System with ``topology``."""
    from openmm_ddpm.analysis import basin_ess, reweighted_expectation

    inside = in_region(samples.positions, topology, region)  # draws without structure carry weight 0 (log w -inf)
    estimate = reweighted_expectation(samples.log_weights, inside)
    ess = basin_ess(samples.log_weights, inside).get(True, (0.0,))[0]
    return RegionEstimate(region, estimate.mean, estimate.error, int(inside.sum()), ess)


def run_topology(directory):
    """The openmm.app.Topology of a run's System (its ``config.yaml``)."""
    return build_system(load_config(os.path.join(directory, CONFIG_NAME)).system)[2]


def parse_temperature(text):
    """'280K', '280 K' or '280 * kelvin' as a Quantity; a one-line error otherwise."""
    from openmm import unit

    from openmm_ddpm.app.config import _kelvin

    return _kelvin(text, "--temperature") * unit.kelvin
