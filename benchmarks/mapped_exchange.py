"""Would a model-mapped replica exchange carry the rare basin down the ladder? An offline measurement.

The move (not in the samplers yet): replicas x at T_i and y at T_j swap
through the model's flow map instead of as they are. y is encoded at T_j
and decoded at T_i, x the other way (M_ij = Phi_j o Phi_i^-1 on the
model's features, the frame kept), and the pair is accepted with

    log alpha = log w_i(M_ji y) + log w_j(M_ij x) - log w_i(x) - log w_j(y),
    w_T(z) = exp(-u_T(z)) / q(z | T),

because |det dM_ij / dx| = q(x | T_i) / q(M_ij x | T_j). Errors of the
model that change slowly with temperature cancel in the ratio, which is
what learned replica exchange (Invernizzi et al. 2022) exploits; and the
pair need not be neighbours, so a 1000 K configuration in the rare basin
can land at 300 K in one step.

Measured here, for a frozen exported model, on configurations of Langevin
runs at each temperature (vacuum, Reference platform, 1 ps apart), for
random pairs (x at 300 K, y at T_j): the mean acceptance of the mapped
swap and of the plain swap of the same pair, the rare-basin arrivals at
300 K per attempt (accepted, and the configuration arriving at 300 K has
phi > 0), and the seconds per attempt. Result:
benchmarks/results/mapped_exchange_<tag>.json.

python benchmarks/mapped_exchange.py --model MODEL.pt --tag NAME [--partners 357 505 1000] [--pairs 200]
"""
import argparse
import os
import time

import numpy as np
import openmm
import torch
from openmm import unit
from openmmtools import testsystems
from provenance import write_result  # noqa: E402  (benchmarks/, the script's directory)

from openmm_ddpm import load_exported_model
from remd_traces import phi_positive

HERE = os.path.dirname(os.path.abspath(__file__))


def langevin_frames(molecule, kelvin, n_frames, seed, equilibration_ps=20):
    """Positions (n, N, 3) nm, 1 ps apart, of Langevin dynamics at ``kelvin`` (1 fs steps, 1/ps friction)."""
    integrator = openmm.LangevinMiddleIntegrator(kelvin * unit.kelvin, 1 / unit.picosecond, 1 * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(molecule.system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(molecule.positions)
    context.setVelocitiesToTemperature(kelvin * unit.kelvin, seed)
    integrator.step(1000 * equilibration_ps)
    frames = []
    for _ in range(n_frames):
        integrator.step(1000)
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return np.array(frames)


class Energies:
    """Potential energies U (kJ/mol) of configurations (n, N, 3) nm; reduced as U / kT."""

    def __init__(self, system):
        self.context = openmm.Context(system, openmm.VerletIntegrator(1.0), openmm.Platform.getPlatformByName("Reference"))

    def reduced(self, positions, kelvin):
        kT = (unit.MOLAR_GAS_CONSTANT_R * kelvin * unit.kelvin).value_in_unit(unit.kilojoule_per_mole)
        values = []
        for x in positions:
            if not np.all(np.isfinite(x)):
                values.append(np.inf)
                continue
            self.context.setPositions(x * unit.nanometer)
            values.append(self.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / kT)
        return np.asarray(values)


def map_between(model, positions, from_kelvin, to_kelvin):
    """Positions (n, N, 3) nm pushed through Phi_to o Phi_from^-1 on the model's features, each keeping its frame."""
    representation = model.representation
    x = torch.as_tensor(positions, dtype=torch.float64)
    features, _ = representation.forward(x)
    latent = model.diffusion.encode(features, from_kelvin).latent
    mapped = model.diffusion.decode(latent, to_kelvin, with_log_prob=False).x
    moved, _, valid = representation.inverse(mapped.to(torch.float64), representation.frame(x))
    return np.where(valid.numpy()[:, None, None], moved.numpy(), np.nan)


def log_weights(model, energies, positions, kelvin):
    """log w_T = -u_T - log q(. | T) (NaN outside the model's support)."""
    return -energies.reduced(positions, kelvin) - model.log_prob(positions, kelvin * unit.kelvin)


def exchange_statistics(model, energies, low, high, low_kelvin, high_kelvin, rng):
    """Mapped and plain swap acceptance and rare-basin arrivals at the low temperature, per attempt."""
    start = time.perf_counter()
    arriving_low = map_between(model, high, high_kelvin, low_kelvin)  # y at T_j -> T_i
    arriving_high = map_between(model, low, low_kelvin, high_kelvin)  # x at T_i -> T_j
    log_alpha = (log_weights(model, energies, arriving_low, low_kelvin) + log_weights(model, energies, arriving_high, high_kelvin)
                 - log_weights(model, energies, low, low_kelvin) - log_weights(model, energies, high, high_kelvin))
    seconds = (time.perf_counter() - start) / len(low)
    mapped = np.where(np.isfinite(log_alpha), np.exp(np.minimum(log_alpha, 0.0)), 0.0)
    beta_low, beta_high = 1.0 / low_kelvin, 1.0 / high_kelvin
    u_low, u_high = energies.reduced(low, 1.0) , energies.reduced(high, 1.0)  # U / R in K
    plain = np.exp(np.minimum((beta_low - beta_high) * (u_low - u_high), 0.0))
    rare_mapped, rare_plain = phi_positive(np.nan_to_num(arriving_low)) & np.isfinite(log_alpha), phi_positive(high)
    return {"partner_kelvin": high_kelvin, "pairs": len(low), "mapped_acceptance": float(mapped.mean()),
            "plain_acceptance": float(plain.mean()), "mapped_invalid_fraction": float(np.mean(~np.isfinite(log_alpha))),
            "rare_basin_share_of_partner": float(rare_plain.mean()),
            "rare_arrivals_per_attempt_mapped": float(np.mean(mapped * rare_mapped)),
            "rare_arrivals_per_attempt_plain": float(np.mean(plain * rare_plain)),
            "seconds_per_mapped_attempt": seconds}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an exported alanine dipeptide vacuum model (.pt)")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--partners", type=float, nargs="+", default=[357.0, 505.0, 1000.0], help="K")
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    molecule = testsystems.AlanineDipeptideVacuum(constraints=None)
    model = load_exported_model(args.model, molecule.system)
    energies, rng = Energies(molecule.system), np.random.default_rng(args.seed)
    low = model.relabel(langevin_frames(molecule, 300.0, args.pairs, args.seed + 1), rng)
    rows = []
    for i, kelvin in enumerate(args.partners):
        high = model.relabel(langevin_frames(molecule, kelvin, args.pairs, args.seed + 2 + i), rng)
        rows.append(exchange_statistics(model, energies, low, high, 300.0, kelvin, rng))
        print(rows[-1], flush=True)
    write_result(os.path.join(HERE, "results", f"mapped_exchange_{args.tag}.json"),
                 {"model": os.path.basename(args.model), "network": model.diffusion.network.config(),
                  "flow_steps": model.diffusion.settings.n_steps, "low_kelvin": 300.0, "rows": rows}, __file__, argv)


if __name__ == "__main__":
    main()
