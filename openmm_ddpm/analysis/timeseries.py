"""Correlated time series: means with honest error bars, basin populations and their free energies."""
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


def mean_with_correlated_error(series):
    """Mean and its standard error for a correlated series, by pymbar's statistical inefficiency.

    Parameters
    ----------
    series : array_like, (n,)

    Returns
    -------
    mean : float
    error : float
        sqrt(g var / n), g the statistical inefficiency (Chodera et al. 2007).
    g : float
    """
    from pymbar import timeseries

    series = np.asarray(series, dtype=float)
    if len(series) < 2:
        raise ValueError("need at least two samples")
    if np.all(series == series[0]):
        return float(series[0]), 0.0, 1.0
    g = float(timeseries.statistical_inefficiency(series))
    return float(series.mean()), float(np.sqrt(g * series.var(ddof=1) / len(series))), g


def basin_free_energy_difference_kt(in_basin):
    """dF = -ln(p / (1 - p)) in kT of a basin, with its error by the delta method.

    Parameters
    ----------
    in_basin : array_like of bool, (n,)
        Per-sample indicator of the basin (e.g. phi > 0), correlated in time.

    Returns
    -------
    p, p_error, df_kt, df_error_kt : float
        Population of the basin, its error, F(basin) - F(rest) in kT and its error.
    """
    p, p_error, _ = mean_with_correlated_error(np.asarray(in_basin, dtype=float))
    return (p, p_error) + population_free_energy_kt(p, p_error)


def population_free_energy_kt(p, p_error):
    """dF = -ln(p / (1 - p)) in kT of a basin of population p, and its delta-method error.

    Returns (inf or -inf, nan) when p is 0 or 1 (no sample on one side).
    """
    if not 0.0 < p < 1.0:
        return float("inf") if p <= 0.0 else float("-inf"), float("nan")
    return float(-np.log(p / (1.0 - p))), float(p_error / (p * (1.0 - p)))
