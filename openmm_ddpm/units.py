"""Units at the boundary: openmm.unit quantities in, plain floats in named units inside.

Inside the package positions are nm, energies kT and temperatures K, and a
bare float says its unit in its name (``temperature_kelvin``). Imports
nothing of the package.
"""
from openmm import unit

_BOLTZMANN_KJ_PER_MOL_K = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)


def temperature_kelvin(temperature):
    """A positive temperature Quantity as a float in K; a one-line error naming the fix otherwise."""
    if not unit.is_quantity(temperature):
        raise TypeError(f"temperature must be an openmm.unit.Quantity (e.g. 300 * unit.kelvin), got {temperature!r}")
    if not temperature.unit.is_compatible(unit.kelvin):
        raise TypeError(f"temperature must be in units of temperature (e.g. 300 * unit.kelvin), got {temperature}")
    value = float(temperature.value_in_unit(unit.kelvin))
    if not value > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return value


def kt_kj_per_mol(temperature):
    """k_B T in kJ/mol for a temperature Quantity."""
    return _BOLTZMANN_KJ_PER_MOL_K * temperature_kelvin(temperature)
