"""The solute of a solvated System: its atoms, and a System of them alone for a solute-only model.

The founding paper's workflow in explicit water (Wang, Herron & Tiwary
2022) trains on the solute's coordinates of a solvated replica-exchange run
and generates solute ensembles at any temperature. The model's
representation needs the solute's bonds, constraints and masses, and its
rotor symmetries are checked on an energy; ``solute_system`` gives all of
them in a System of the solute atoms alone, in vacuum. That System's
energy is not the solute's free energy in water: samples of such a model
cannot be reweighted to the solvated ensemble, and the application says so
wherever it uses one.
"""
from openmm_ddpm.coordinates.topology import bond_graph, connected_components

WATER_RESIDUE_NAMES = frozenset({"HOH", "WAT", "SOL", "H2O", "TIP3", "TIP4", "TIP5", "T3P", "T4P", "T5P", "SPC", "OPC"})
COPIED_FORCES = ("HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce", "NonbondedForce")


def solute_atoms(topology):
    """Indices of the atoms of every molecule that is neither water nor a single atom (an ion), sorted.

    Parameters
    ----------
    topology : openmm.app.Topology
    """
    atoms = list(topology.atoms())
    solute = []
    for molecule in connected_components(bond_graph(topology)):
        water = all(atoms[i].residue.name.upper() in WATER_RESIDUE_NAMES for i in molecule)
        if not water and len(molecule) > 1:
            solute += molecule
    return sorted(solute)


def is_solvated(system, topology):
    """True for a periodic System or one with water molecules (a solute model is then what can be trained)."""
    return system.usesPeriodicBoundaryConditions() or any(
        residue.name.upper() in WATER_RESIDUE_NAMES for residue in topology.residues())


def solute_system(system, atoms):
    """The solute alone in vacuum: its masses, constraints, bonded terms and non-bonded terms among it.

    Harmonic bonds, angles, periodic torsions and the NonbondedForce (no
    cutoff, the solute's charges, Lennard-Jones parameters and exceptions)
    are copied; every other force is left out (the System serves the
    representation: bond graph, constraints, masses, rotor symmetry).

    Parameters
    ----------
    system : openmm.System
        The solvated System.
    atoms : sequence of int
        The solute's atoms (``solute_atoms``); every bond and constraint of them must stay among them.

    Returns
    -------
    openmm.System
        Particle i is the System's atom ``atoms[i]``.
    """
    import openmm

    index = {int(atom): new for new, atom in enumerate(atoms)}
    solute = openmm.System()
    for atom in atoms:
        if system.isVirtualSite(int(atom)):
            raise ValueError(f"solute atom {atom} is a virtual site: a solute model needs real atoms")
        solute.addParticle(system.getParticleMass(int(atom)))
    for k in range(system.getNumConstraints()):
        a, b, length = system.getConstraintParameters(k)
        _add_if_inside(index, (a, b), lambda pair: solute.addConstraint(*pair, length))
    for force in system.getForces():
        name = type(force).__name__
        if name in COPIED_FORCES:
            solute.addForce(getattr(_Copy, name)(force, index))
    return solute


def _inside(index, particles):
    inside = [p in index for p in particles]
    if any(inside) and not all(inside):
        raise ValueError(f"atoms {list(particles)} are bonded across the solute's edge: give whole molecules as solute")
    return all(inside)


def _add_if_inside(index, particles, add):
    if _inside(index, particles):
        add([index[p] for p in particles])


class _Copy:
    """Each copied force restricted to the solute (particles renumbered by ``index``)."""

    @staticmethod
    def HarmonicBondForce(force, index):
        import openmm
        copy = openmm.HarmonicBondForce()
        for k in range(force.getNumBonds()):
            a, b, length, stiffness = force.getBondParameters(k)
            _add_if_inside(index, (a, b), lambda pair: copy.addBond(*pair, length, stiffness))
        return copy

    @staticmethod
    def HarmonicAngleForce(force, index):
        import openmm
        copy = openmm.HarmonicAngleForce()
        for k in range(force.getNumAngles()):
            a, b, c, angle, stiffness = force.getAngleParameters(k)
            _add_if_inside(index, (a, b, c), lambda triple: copy.addAngle(*triple, angle, stiffness))
        return copy

    @staticmethod
    def PeriodicTorsionForce(force, index):
        import openmm
        copy = openmm.PeriodicTorsionForce()
        for k in range(force.getNumTorsions()):
            a, b, c, d, periodicity, phase, barrier = force.getTorsionParameters(k)
            _add_if_inside(index, (a, b, c, d), lambda quad: copy.addTorsion(*quad, periodicity, phase, barrier))
        return copy

    @staticmethod
    def NonbondedForce(force, index):
        import openmm
        copy = openmm.NonbondedForce()
        copy.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
        for atom in index:
            copy.addParticle(*force.getParticleParameters(atom))
        for k in range(force.getNumExceptions()):
            a, b, charge_product, sigma, epsilon = force.getExceptionParameters(k)
            if a in index and b in index:
                copy.addException(index[a], index[b], charge_product, sigma, epsilon)
        return copy


__all__ = ["solute_atoms", "is_solvated", "solute_system", "WATER_RESIDUE_NAMES"]
