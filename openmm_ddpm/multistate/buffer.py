"""The replay buffer of online training: the newest frames with their temperatures, bounded.

Acceptance grows with the amount of data (DESIGN.md section 7), so the
propagation streams a frame every ``stream_stride`` MD steps
(``moves.streaming``), not only at the end of each iteration.
"""
import numpy as np


class ReplayBuffer:
    """A bounded first-in-first-out store of configurations and their temperatures.

    Parameters
    ----------
    capacity : int
        Maximum number of frames; the oldest are overwritten.
    n_atoms : int
    """

    def __init__(self, capacity, n_atoms):
        if capacity < 1 or n_atoms < 1:
            raise ValueError("capacity and n_atoms must be >= 1")
        self.capacity = int(capacity)
        self.n_atoms = int(n_atoms)
        self._positions = np.zeros((self.capacity, self.n_atoms, 3), dtype=np.float32)
        self._temperatures = np.zeros(self.capacity, dtype=np.float32)
        self._size = 0
        self._next = 0
        self.n_added = 0

    def __len__(self):
        return self._size

    def add(self, positions_nm, temperature_kelvin):
        """Append frames.

        Parameters
        ----------
        positions_nm : array_like, (n, n_atoms, 3), nm
        temperature_kelvin : float or array_like (n,), K
        """
        positions = np.asarray(positions_nm, dtype=np.float32).reshape(-1, self.n_atoms, 3)
        temperatures = np.broadcast_to(np.asarray(temperature_kelvin, dtype=np.float32), (len(positions),))
        if not np.all(np.isfinite(positions)):
            raise ValueError("refusing to store non-finite positions")
        for start in range(0, len(positions), self.capacity):
            self._add_chunk(positions[start : start + self.capacity], temperatures[start : start + self.capacity])

    def _add_chunk(self, positions, temperatures):
        index = (self._next + np.arange(len(positions))) % self.capacity
        self._positions[index] = positions
        self._temperatures[index] = temperatures
        self._next = int((self._next + len(positions)) % self.capacity)
        self._size = min(self._size + len(positions), self.capacity)
        self.n_added += len(positions)

    def arrays(self):
        """Stored frames as (positions (n, n_atoms, 3) nm, temperatures (n,) K), oldest first."""
        order = np.arange(self._next - self._size, self._next) % self.capacity
        return self._positions[order], self._temperatures[order]

    def state_dict(self):
        """Plain arrays and integers that reproduce the buffer (checkpoint-safe)."""
        positions, temperatures = self.arrays()
        return {"capacity": self.capacity, "n_atoms": self.n_atoms, "positions": positions.copy(),
                "temperatures": temperatures.copy(), "n_added": self.n_added}

    @classmethod
    def from_state_dict(cls, state):
        buffer = cls(int(state["capacity"]), int(state["n_atoms"]))
        buffer.add(np.asarray(state["positions"]), np.asarray(state["temperatures"]))
        buffer.n_added = int(state["n_added"])
        return buffer
