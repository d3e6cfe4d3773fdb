"""Context caches of the samplers: where openmmtools evaluates energies.

``EnergyContextCache`` keeps energy evaluations from touching the random
stream of the Langevin dynamics, so a seeded run repeats.
"""
import openmm
from openmm import unit
from openmmtools import cache


class EnergyContextCache(cache.ContextCache):
    """openmmtools' ContextCache for energies only, whose default integrator draws no random numbers.

    openmmtools evaluates energies in Contexts made with a default
    ``GeodesicBAOABIntegrator`` of random seed 0, and on the Reference
    platform creating such a Context reseeds the one random stream every
    Langevin integrator of the process draws from, at random: a seeded run
    then parts from its repeat. A ``VerletIntegrator`` draws nothing. The
    platform is the one given, else that of openmmtools' global context
    cache when the first Context is made, so setting
    ``cache.global_context_cache.platform`` before running keeps working.
    """

    _cached_default_integrator_id = None  # the parent caches its own default's id on the class

    def __init__(self, platform=None, platform_properties=None, **kwargs):
        super().__init__(platform=platform, platform_properties=platform_properties, **kwargs)
        self._platform_from_global_cache = platform is None

    @staticmethod
    def _get_default_integrator(temperature):
        return openmm.VerletIntegrator(1.0 * unit.femtosecond)

    def get_context(self, thermodynamic_state, integrator=None):
        if len(self) == 0 and self._platform_from_global_cache:
            self._platform = cache.global_context_cache.platform
            self._platform_properties = cache.global_context_cache._platform_properties
        return super().get_context(thermodynamic_state, integrator)
