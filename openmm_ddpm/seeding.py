"""One user seed spawns every random stream of a run (numpy ``SeedSequence``).

Each stream has a purpose and optional keys (a state index, an iteration),
so streams never overlap and adding one never shifts another:

- ``network``: the initial weights (a torch seed);
- ``training``: minibatches and noise levels (the trainer's torch.Generator);
- ``relabel``: relabelling of equivalent atoms and training subsets (numpy);
- ``proposal``, state: each target state's move (numpy; torch derived from it);
- ``exchange``, i, j: the mapped exchange of the state pair (i, j);
- ``dynamics``: the Langevin integrator of the default move (an OpenMM seed);
- ``mixing``, iteration: openmmtools' replica mixing, which draws from the
  global numpy and numba generators (``seed_replica_mixing`` reseeds both
  before each iteration's mixing, so a resumed run mixes as an
  uninterrupted one would).

No stream of the library is seeded any other way: no fixed seed, no OS
entropy. Imports nothing of the package.
"""
import numpy as np

PURPOSES = {"network": 1, "training": 2, "relabel": 3, "proposal": 4, "dynamics": 5, "mixing": 6, "exchange": 7}


def seed_sequence(seed, purpose, *keys):
    """The ``numpy.random.SeedSequence`` of one stream of the run seeded by ``seed``."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown random stream {purpose!r}; known: {sorted(PURPOSES)}")
    if isinstance(seed, bool) or int(seed) != seed or int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.SeedSequence(int(seed), spawn_key=(PURPOSES[purpose], *(int(k) for k in keys)))


def numpy_generator(seed, purpose, *keys):
    """A ``numpy.random.Generator`` on one stream."""
    return np.random.default_rng(seed_sequence(seed, purpose, *keys))


def integer_seed(seed, purpose, *keys):
    """An integer in [1, 2**31) from one stream, for torch and OpenMM (whose seed 0 means 'pick one')."""
    return int(seed_sequence(seed, purpose, *keys).generate_state(1, dtype=np.uint32)[0] % (2**31 - 1)) + 1


def seed_replica_mixing(seed, iteration):
    """Seed the global numpy and numba generators that openmmtools' replica mixing draws from.

    A process-wide effect, on purpose: openmmtools offers no generator
    argument. Called by the samplers right before each iteration's mixing.
    """
    value = integer_seed(seed, "mixing", iteration)
    np.random.seed(value)
    _seed_numba(value)


def _seed_numba(value):
    from numba import njit

    global _numba_seeder
    if _numba_seeder is None:
        @njit(cache=False)
        def seeder(v):
            np.random.seed(v)

        _numba_seeder = seeder
    _numba_seeder(value)


_numba_seeder = None
