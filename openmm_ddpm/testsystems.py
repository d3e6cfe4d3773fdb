"""Built-in test systems whose equilibrium answers are known exactly.

``DoubleWell2D`` is shaped like an ``openmmtools.testsystems`` test system:
it has ``.system``, ``.positions`` and ``.topology``.
"""
from dataclasses import dataclass

import numpy as np
import openmm
from openmm import app, unit

from openmm_ddpm.units import kt_kj_per_mol


@dataclass(frozen=True)
class WellPopulations:
    """Equilibrium populations of the two wells of a double well.

    Attributes
    ----------
    left : float
        Probability of x < 0.
    right : float
        Probability of x >= 0.
    """

    left: float
    right: float

    @property
    def free_energy_difference_kt(self):
        """F(right) - F(left) in units of k_B T."""
        return float(np.log(self.left / self.right))


class DoubleWell2D:
    """One particle in an asymmetric double well in (x, y), harmonic in z.

    U(x, y, z) = h ((x/a)^2 - 1)^2 + t x/a + k_y(x)/2 (y - c x)^2 + k_z/2 z^2,
    k_y(x) = k_y exp(w x/a)

    The wells sit at x = -a (deeper for t > 0) and x = +a; the coupling c
    bends the path between them, so the marginal in (x, y) is a genuinely
    two-dimensional, curved density; w > 0 makes the left well wider in y
    (entropically favoured, more so at higher temperature). Because y and z
    enter only through Gaussians, integrating them out leaves a factor
    k_y(x)^(-1/2) and the well populations reduce to a one-dimensional
    quadrature over x (``exact_populations``).

    Parameters
    ----------
    barrier_height : openmm.unit.Quantity, energy per mole
        h, the barrier of the symmetric part (default 40 kJ/mol, 16 kT at
        300 K: Langevin dynamics at 300 K does not cross in 1e6 steps).
    tilt : openmm.unit.Quantity, energy per mole
        t, the asymmetry (default 2.8 kJ/mol, which gives P(left) ~ 0.9 at
        300 K).
    well_separation : openmm.unit.Quantity, length
        a, half the distance between the minima (default 0.5 nm).
    coupling : float
        c, dimensionless slope of the valley floor y = c x (default 0.5).
    spring_constant_y, spring_constant_z : openmm.unit.Quantity
        k_y and k_z in energy / (mole length^2) (default 200 kJ/mol/nm^2).
    width_asymmetry : float
        w, dimensionless (default 0: both wells equally wide in y).
    mass : openmm.unit.Quantity, mass
        Particle mass (default 10 amu).
    n_bath_particles : int
        Extra particles, each in an isotropic harmonic well of stiffness
        k_z, independent of the double-well particle (default 0). They leave
        the well populations unchanged but add 3 degrees of freedom each,
        which narrows the energy distributions the way a larger molecule
        does, so replica exchange needs closely spaced temperatures.
    """

    def __init__(
        self,
        *,
        barrier_height=40.0 * unit.kilojoule_per_mole,
        tilt=2.8 * unit.kilojoule_per_mole,
        well_separation=0.5 * unit.nanometer,
        coupling=0.5,
        spring_constant_y=200.0 * unit.kilojoule_per_mole / unit.nanometer**2,
        spring_constant_z=200.0 * unit.kilojoule_per_mole / unit.nanometer**2,
        width_asymmetry=0.0,
        mass=10.0 * unit.amu,
        n_bath_particles=0,
    ):
        energy = unit.kilojoule_per_mole
        stiffness = unit.kilojoule_per_mole / unit.nanometer**2
        self.barrier_height_kj_per_mol = _positive(barrier_height.value_in_unit(energy), "barrier_height")
        self.tilt_kj_per_mol = float(tilt.value_in_unit(energy))
        self.well_separation_nm = _positive(well_separation.value_in_unit(unit.nanometer), "well_separation")
        self.coupling = float(coupling)
        self.spring_constant_y = _positive(spring_constant_y.value_in_unit(stiffness), "spring_constant_y")
        self.spring_constant_z = _positive(spring_constant_z.value_in_unit(stiffness), "spring_constant_z")
        self.width_asymmetry = float(width_asymmetry)
        self.mass_amu = _positive(mass.value_in_unit(unit.amu), "mass")
        if int(n_bath_particles) < 0:
            raise ValueError(f"n_bath_particles must be >= 0, got {n_bath_particles}")
        self.n_bath_particles = int(n_bath_particles)
        self.system = self._build_system()
        self.topology = self._build_topology()
        self.positions = self.minimum_positions(0)

    def energy_expression(self):
        """Return the CustomExternalForce expression (kJ/mol, nm)."""
        return (
            "h*((x/a)^2 - 1)^2 + t*x/a + 0.5*ky*exp(w*x/a)*(y - c*x)^2 + 0.5*kz*z^2;"
            f"h={self.barrier_height_kj_per_mol!r}; t={self.tilt_kj_per_mol!r}; w={self.width_asymmetry!r};"
            f"a={self.well_separation_nm!r}; c={self.coupling!r};"
            f"ky={self.spring_constant_y!r}; kz={self.spring_constant_z!r}"
        )

    def _build_system(self):
        system = openmm.System()
        system.addParticle(self.mass_amu)
        force = openmm.CustomExternalForce(self.energy_expression())
        force.addParticle(0, [])
        system.addForce(force)
        if self.n_bath_particles:
            bath = openmm.CustomExternalForce(f"0.5*kb*(x^2 + y^2 + z^2); kb={self.spring_constant_z!r}")
            for index in range(1, 1 + self.n_bath_particles):
                system.addParticle(self.mass_amu)
                bath.addParticle(index, [])
            system.addForce(bath)
        return system

    def _build_topology(self):
        topology = app.Topology()
        chain = topology.addChain()
        residue = topology.addResidue("DW", chain)
        topology.addAtom("X", None, residue)
        for _ in range(self.n_bath_particles):
            topology.addAtom("B", None, topology.addResidue("BTH", chain))
        return topology

    def potential_energy_kj_per_mol(self, positions_nm):
        """U in kJ/mol for positions of shape (n, n_particles, 3) or (n_particles, 3), nm."""
        positions = np.asarray(positions_nm, dtype=float).reshape(-1, 1 + self.n_bath_particles, 3)
        x, y, z = positions[:, 0].T
        s = x / self.well_separation_nm
        bath = 0.5 * self.spring_constant_z * np.sum(positions[:, 1:] ** 2, axis=(1, 2))
        return bath + (
            self.barrier_height_kj_per_mol * (s**2 - 1.0) ** 2
            + self.tilt_kj_per_mol * s
            + 0.5 * self.spring_constant_y * np.exp(self.width_asymmetry * s) * (y - self.coupling * x) ** 2
            + 0.5 * self.spring_constant_z * z**2
        )

    def _x_marginal_energy(self, x_nm):
        s = x_nm / self.well_separation_nm
        return self.barrier_height_kj_per_mol * (s**2 - 1.0) ** 2 + self.tilt_kj_per_mol * s

    def _x_marginal_free_energy(self, x_nm, kt):
        """-kT ln of the density of x after integrating y out: adds (kT/2) ln k_y(x)."""
        s = x_nm / self.well_separation_nm
        return self._x_marginal_energy(x_nm) + 0.5 * kt * self.width_asymmetry * s

    def exact_populations(self, temperature):
        """Equilibrium well populations by quadrature over x.

        Parameters
        ----------
        temperature : openmm.unit.Quantity, temperature

        Returns
        -------
        WellPopulations
        """
        kt = kt_kj_per_mol(temperature)
        if not kt > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        x, weights = self._quadrature_grid(kt)
        left = np.sum(weights[x < 0.0]) + 0.5 * np.sum(weights[x == 0.0])
        total = np.sum(weights)
        return WellPopulations(left=float(left / total), right=float(1.0 - left / total))

    def _quadrature_grid(self, kt, n_points=400001):
        """Grid over x holding all but ~exp(-70) of the density at k_B T = kt.

        Far from the wells U grows like h (x/a)^4, so |x/a| = 1.5 + (70 kT/h)^(1/4)
        is beyond 70 kT above the minima.
        """
        linear = abs(self.tilt_kj_per_mol) + 0.5 * kt * abs(self.width_asymmetry)
        half_width = self.well_separation_nm * (
            1.5 + (70.0 * kt / self.barrier_height_kj_per_mol) ** 0.25 + linear / self.barrier_height_kj_per_mol
        )
        x = np.linspace(-half_width, half_width, n_points)
        energy = self._x_marginal_free_energy(x, kt)
        weights = np.exp(-(energy - energy.min()) / kt)
        return x, weights

    def well_index(self, positions_nm):
        """0 for the left well (x < 0), 1 for the right well.

        Parameters
        ----------
        positions_nm : array_like, shape (n, n_particles, 3) or (n_particles, 3), nm

        Returns
        -------
        numpy.ndarray of int, (n,)
        """
        positions = np.asarray(positions_nm, dtype=float).reshape(-1, 1 + self.n_bath_particles, 3)
        return (positions[:, 0, 0] >= 0.0).astype(int)

    def sample_well_by_md(self, temperature, well, n_samples, *, stride_steps=50, seed=0,
                          timestep=2.0 * unit.femtosecond, collision_rate=1.0 / unit.picosecond):
        """Frames of Langevin dynamics started in one well (Reference platform).

        At low temperature the barrier is not crossed, so frames of both
        wells in chosen proportions make a data set with *deliberately*
        chosen (wrong) populations.

        Parameters
        ----------
        temperature : openmm.unit.Quantity
        well : int
            0 (left) or 1 (right): where the trajectory starts.
        n_samples : int
        stride_steps : int
            MD steps between frames (after as many steps of equilibration).
        seed : int
            Langevin random seed (must be non-zero for OpenMM to use it; 0 -> 1).

        Returns
        -------
        numpy.ndarray, (n_samples, n_particles, 3), nm
        """
        integrator = openmm.LangevinMiddleIntegrator(temperature, collision_rate, timestep)
        integrator.setRandomNumberSeed(int(seed) + 1)
        context = openmm.Context(self.system, integrator, openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(self.minimum_positions(well))
        context.setVelocitiesToTemperature(temperature, int(seed) + 1)
        integrator.step(20 * stride_steps)
        frames = np.empty((n_samples, 1 + self.n_bath_particles, 3))
        for i in range(n_samples):
            integrator.step(stride_steps)
            frames[i] = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        return frames

    def minimum_positions(self, well):
        """Positions (nm, shape (n_particles, 3)) at the minimum of well 0 (left) or 1 (right)."""
        if well not in (0, 1):
            raise ValueError(f"well must be 0 (left) or 1 (right), got {well!r}")
        positions = np.zeros((1 + self.n_bath_particles, 3))
        x = (-1.0 if well == 0 else 1.0) * self.well_separation_nm
        positions[0] = [x, self.coupling * x, 0.0]
        return unit.Quantity(positions, unit.nanometer)


def _positive(value, name):
    value = float(value)
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value
