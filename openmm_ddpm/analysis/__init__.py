"""Estimates from a run and its model, with honest error bars.

``timeseries``: means of correlated series (pymbar statistical
inefficiency, batch means) and basin free energies; ``mbar``: MBAR over a
run's states, at unsimulated temperatures, and pooled with model samples;
``reweighting``: importance weights of model samples and generation at any
temperature; ``stratified``: each region weighed from its own proposal's draws; ``diagnostics``: expected acceptance, overfitting gap,
per-basin ESS; ``dihedrals``: peptide phi/psi and free-energy surfaces.
May import ``model``, ``moves`` and ``multistate.storage``; never the
samplers or the application.
"""
from openmm_ddpm.analysis.diagnostics import (
                                       basin_ess,
                                       expected_mh_acceptance,
                                       log_weight_gap,
)
from openmm_ddpm.analysis.dihedrals import backbone_dihedrals, free_energy_surface
from openmm_ddpm.analysis.mbar import (
                                       MBAREstimates,
                                       PooledEstimate,
                                       mbar_expectations,
                                       mbar_thinning,
                                       mbar_with_model_samples,
                                       reweight_run_and_model_samples,
)
from openmm_ddpm.analysis.reweighting import (
                                       WeightedEstimate,
                                       generate_at_temperature,
                                       generate_with_densities,
                                       reweight_run_with_model,
                                       reweighted_expectation,
)
from openmm_ddpm.analysis.stratified import (
                                       StratumEstimate,
                                       stratified_free_energy_difference_kt,
                                       stratum_log_partition_function,
)
from openmm_ddpm.analysis.timeseries import (
                                       basin_free_energy_difference_kt,
                                       batch_means_standard_error,
                                       mean_with_correlated_error,
                                       population_free_energy_kt,
)

__all__ = ["MBAREstimates", "PooledEstimate", "StratumEstimate", "WeightedEstimate", "backbone_dihedrals", "basin_ess", "basin_free_energy_difference_kt",
           "batch_means_standard_error", "expected_mh_acceptance", "free_energy_surface", "generate_at_temperature",
           "generate_with_densities", "log_weight_gap", "mbar_expectations", "mbar_thinning",
           "mbar_with_model_samples", "mean_with_correlated_error", "population_free_energy_kt",
           "reweight_run_and_model_samples", "reweight_run_with_model", "reweighted_expectation",
           "stratified_free_energy_difference_kt", "stratum_log_partition_function"]
