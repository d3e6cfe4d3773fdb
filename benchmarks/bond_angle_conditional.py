"""Could bonds and angles get a closed-form conditional density, leaving only the torsions to the diffusion model?

The lever (issue 17, 'diffuse only the slow coordinates'): draw the torsions
from the model and the stiff coordinates (bonds, angles) from a Gaussian
with an exact density; the exact Jacobian would shrink from D = 60 to the
19 torsions of alanine dipeptide. What it would cost in weight quality is
measured here at fixed torsions: for held-out configurations of a 300 K
Langevin run (vacuum, Reference platform), the bonds and angles are redrawn
``--draws`` times from the Gaussian while the torsions stay, and each draw
is weighted by exp(-u) J / N, with J the Jacobian of the internal
coordinates (the target's density over them at these torsions). The Kish
ESS fraction of those weights is the best the whole proposal could reach if
the torsion model were perfect. Gaussians (``--mode``):

- ``forcefield``: independent, mean and width from the harmonic bond and
  angle terms of the force field (sigma^2 = kT / k): no data needed, any temperature;
- ``diagonal``: independent, mean and variance fitted on the training frames;
- ``full``: one mean and full covariance fitted on the training frames;
- ``linear``: mean linear in sin/cos of each torsion and twice each torsion,
  full covariance of the residuals (least squares on the training frames).

Result: benchmarks/results/bond_angle_conditional.json (all modes).

python benchmarks/bond_angle_conditional.py [--frames 3000] [--held-out 40] [--draws 128]
"""
import argparse
import os

import numpy as np
import openmm
import torch
from openmm import unit
from openmmtools import testsystems
from provenance import write_result  # noqa: E402  (benchmarks/, the script's directory)

from openmm_ddpm.coordinates.internal import InternalCoordinates

HERE = os.path.dirname(os.path.abspath(__file__))
MODES = ("forcefield", "diagonal", "full", "linear")
FRAME = torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)  # nm; the energy ignores it


def stiff_rows(coordinates):
    """(kind, atoms) of every feature in the Z-matrix order; kind 'bond', 'angle' or 'torsion'."""
    a0, a1, a2 = coordinates.order[:3]
    s = coordinates.second_reference
    other = a1 if s == a0 else a0
    rows = [("bond", (a0, a1)), ("bond", (a2, s)), ("angle", (a2, s, other))]
    for i, j, k, _ in coordinates.references:
        rows += [("bond", (i, j)), ("angle", (i, j, k)), ("torsion", None)]
    return rows


def forcefield_gaussian(system, rows, kelvin):
    """Means (nm, rad) and standard deviations sqrt(kT / k) of the stiff features from the harmonic terms."""
    kT = (unit.MOLAR_GAS_CONSTANT_R * kelvin * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)
    terms = {}
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for n in range(force.getNumBonds()):
                a, b, length, k = force.getBondParameters(n)
                terms[frozenset((a, b))] = (length.value_in_unit(unit.nanometer),
                                            k.value_in_unit(unit.kilojoule_per_mole / unit.nanometer**2))
        if isinstance(force, openmm.HarmonicAngleForce):
            for n in range(force.getNumAngles()):
                a, b, c, angle, k = force.getAngleParameters(n)
                terms[(frozenset((a, c)), b)] = (angle.value_in_unit(unit.radian),
                                                 k.value_in_unit(unit.kilojoule_per_mole / unit.radian**2))
    keys = [frozenset(atoms) if kind == "bond" else (frozenset((atoms[0], atoms[2])), atoms[1])
            for kind, atoms in rows if kind != "torsion"]
    mean = np.array([terms[key][0] for key in keys])
    return mean, np.diag([kT / terms[key][1] for key in keys])


def torsion_design(torsions):
    """Regressors of the 'linear' mode: 1, sin t, cos t, sin 2t, cos 2t per torsion."""
    return np.concatenate([np.ones((len(torsions), 1)), np.sin(torsions), np.cos(torsions),
                           np.sin(2 * torsions), np.cos(2 * torsions)], axis=1)


def langevin_frames(molecule, kelvin, n_frames, stride, seed):
    """Positions (n, N, 3) nm every ``stride`` fs of 300 K Langevin dynamics after 5 ps, and the Context."""
    integrator = openmm.LangevinMiddleIntegrator(kelvin * unit.kelvin, 1 / unit.picosecond, 1 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(molecule.system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(molecule.positions)
    integrator.step(5000)
    frames = []
    for _ in range(n_frames):
        integrator.step(stride)
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return np.array(frames), context


def conditional_ess(mode, features, stiff, torsion_columns, held_out, coordinates, context, kelvin, draws, rng, system):
    """Mean, median and smallest ESS fraction over the held-out frames for one Gaussian."""
    train, test = features[:-held_out], features[-held_out:]
    if mode == "forcefield":
        mean, covariance = forcefield_gaussian(system, stiff_rows(coordinates), kelvin)
    elif mode == "linear":
        coefficients, *_ = np.linalg.lstsq(torsion_design(train[:, torsion_columns]), train[:, stiff], rcond=None)
        covariance = np.cov((train[:, stiff] - torsion_design(train[:, torsion_columns]) @ coefficients).T)
    else:
        mean, covariance = train[:, stiff].mean(0), np.cov(train[:, stiff].T)
        covariance = np.diag(np.diag(covariance)) if mode == "diagonal" else covariance
    cholesky, precision = np.linalg.cholesky(covariance), np.linalg.inv(covariance)
    kT = (unit.MOLAR_GAS_CONSTANT_R * kelvin * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)
    fractions = []
    for row in test:
        if mode == "linear":
            mean = (torsion_design(row[None, torsion_columns]) @ coefficients)[0]
        z = np.repeat(row[None], draws, axis=0)
        z[:, stiff] = mean + rng.standard_normal((draws, len(stiff))) @ cholesky.T
        positions, log_jacobian = coordinates.inverse(torch.as_tensor(z), FRAME)
        energies = []
        for x in positions.numpy():
            context.setPositions(x * unit.nanometer)
            energies.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / kT)
        d = z[:, stiff] - mean
        log_gauss = -0.5 * np.einsum("ni,ij,nj->n", d, precision, d)
        log_w = -np.asarray(energies) + log_jacobian.numpy() - log_gauss
        w = np.exp(np.where(np.isfinite(log_w), log_w - np.nanmax(log_w), -np.inf))
        fractions.append(float(w.sum() ** 2 / (w**2).sum() / draws))
    return {"mode": mode, "ess_fraction_mean": float(np.mean(fractions)), "ess_fraction_median": float(np.median(fractions)),
            "ess_fraction_min": float(np.min(fractions))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000, help="training frames, 100 fs apart")
    parser.add_argument("--held-out", type=int, default=40)
    parser.add_argument("--draws", type=int, default=128, help="Gaussian draws per held-out frame")
    parser.add_argument("--temperature", type=float, default=300.0, help="K")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    molecule = testsystems.AlanineDipeptideVacuum(constraints=None)
    coordinates = InternalCoordinates.from_system(molecule.system, molecule.positions.value_in_unit(unit.nanometer))
    coordinates.use_rotor_groups([])  # plain 2 pi windows: every MD frame is in the domain as it is
    frames, context = langevin_frames(molecule, args.temperature, args.frames + args.held_out, 100, args.seed)
    features = coordinates.forward(torch.as_tensor(frames))[0].numpy()
    kinds = [kind for kind, _ in stiff_rows(coordinates)]
    stiff = [n for n, kind in enumerate(kinds) if kind != "torsion"]
    torsion_columns = [n for n, kind in enumerate(kinds) if kind == "torsion"]
    rows = []
    for mode in MODES:
        rows.append(conditional_ess(mode, features, stiff, torsion_columns, args.held_out, coordinates, context,
                                    args.temperature, args.draws, np.random.default_rng(args.seed), molecule.system))
        print(rows[-1], flush=True)
    write_result(os.path.join(HERE, "results", "bond_angle_conditional.json"),
                 {"temperature_kelvin": args.temperature, "stiff_features": len(stiff), "torsions": len(torsion_columns),
                  "training_frames": args.frames, "held_out_frames": args.held_out, "draws_per_frame": args.draws,
                  "rows": rows}, __file__, argv)


if __name__ == "__main__":
    main()
