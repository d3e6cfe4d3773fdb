"""Estimates from chains: populations with correlation-aware error bars."""
import numpy as np


def batch_means_standard_error(series, n_batches=20):
    """Standard error of the mean of a correlated series by batch means.

    Parameters
    ----------
    series : array_like, (n,)
    n_batches : int
        The series is cut into this many contiguous batches (the remainder at
        the start is dropped); their means are treated as independent.

    Returns
    -------
    float
    """
    series = np.asarray(series, dtype=float)
    if n_batches < 2 or len(series) < 2 * n_batches:
        raise ValueError(f"need at least {2 * n_batches} samples for {n_batches} batches, got {len(series)}")
    batch_length = len(series) // n_batches
    batches = series[len(series) - n_batches * batch_length :].reshape(n_batches, batch_length)
    return float(batches.mean(axis=1).std(ddof=1) / np.sqrt(n_batches))
