"""Temperature mixtures of a model: density matches the draws, the chain stays exact."""
import numpy as np
import pytest
import torch
from analytic import GaussianMixtureModel
from conftest import run_chain
from openmm import unit
from test_proposal import TEMPERATURE, langevin_then, left_population

from openmm_ddpm.coordinates import CartesianCoordinates, Representation
from openmm_ddpm.model import ConditionedMLP, DiffusionProposalModel, EDMDiffusion
from openmm_ddpm.moves import GenerativeProposal, TemperatureMixture
from openmm_ddpm.settings import DiffusionSettings


class TemperatureScaledGaussians(GaussianMixtureModel):
    """Analytic temperature-conditioned proposal: widths grow as sqrt(T / 300 K), the left
    component's weight shrinks with T, so q(. | 300 K) and q(. | 600 K) differ in shape and populations."""

    def _at(self, temperature):
        scale = temperature.value_in_unit(unit.kelvin) / 300.0
        left = self.weights[0] / scale
        return GaussianMixtureModel(self.means, self.stddevs * np.sqrt(scale), [left, 1.0 - left])

    def sample(self, n, temperature, generator=None, reference_positions=None):
        return self._at(temperature).sample(n, temperature, generator)

    def log_prob(self, positions, temperature):
        return self._at(temperature).log_prob(positions, temperature)


def scaled_model(double_well, left=0.8, stddev=0.1):
    means = [double_well.minimum_positions(w).value_in_unit(unit.nanometer) for w in (0, 1)]
    return TemperatureScaledGaussians(means, [stddev, stddev], [left, 1.0 - left])


def test_draws_follow_the_reported_mixture_density(double_well):
    """E_{y ~ q_mix}[p(y) / q_mix(y)] = 1 for a normalized p: the draws come from the density log_prob claims."""
    model = scaled_model(double_well)
    mixture = TemperatureMixture(model, (1.0, 2.0), weights=(0.3, 0.7))
    positions, log_q = mixture.sample(40000, TEMPERATURE, generator=torch.Generator().manual_seed(1))
    for target_kelvin in (300.0, 450.0):  # p: the model's own conditional at another temperature
        ratio = np.exp(model.log_prob(positions, target_kelvin * unit.kelvin) - log_q)
        assert abs(ratio.mean() - 1.0) < 4 * ratio.std() / np.sqrt(len(ratio)), target_kelvin
    # a mixture that misreports its weights fails the same check
    wrong = TemperatureMixture(model, (1.0, 2.0), weights=(0.7, 0.3)).log_prob(positions, TEMPERATURE)
    ratio = np.exp(model.log_prob(positions, TEMPERATURE) - wrong)
    assert abs(ratio.mean() - 1.0) > 10 * ratio.std() / np.sqrt(len(ratio))


def test_log_prob_is_the_weighted_sum_of_component_densities(double_well):
    model = scaled_model(double_well)
    mixture = TemperatureMixture(model, (1.0, 1.5, 3.0), weights=(1.0, 2.0, 1.0))
    positions, _ = model.sample(50, TEMPERATURE, generator=torch.Generator().manual_seed(2))
    expected = np.log(sum(c * np.exp(model.log_prob(positions, s * TEMPERATURE))
                          for c, s in ((0.25, 1.0), (0.5, 1.5), (0.25, 3.0))))
    assert np.max(np.abs(mixture.log_prob(positions, TEMPERATURE) - expected)) < 1e-10


@pytest.mark.slow
@pytest.mark.parametrize("n_candidates", [1, 4])
def test_chain_with_mixture_proposals_gives_exact_populations(double_well, reference_context_cache, n_candidates):
    """Langevin + moves from a mixture of q(. | T) and q(. | 2T) (both wrong) recover the exact ~90/10."""
    mixture = TemperatureMixture(scaled_model(double_well, left=0.5, stddev=0.12), (1.0, 2.0))
    proposal = GenerativeProposal(mixture, n_candidates=n_candidates, random_state=30 + n_candidates)
    wells = run_chain(double_well, langevin_then(proposal), TEMPERATURE, 4000, reference_context_cache)
    estimate, error = left_population(wells)
    exact = double_well.exact_populations(TEMPERATURE).left
    assert abs(estimate - exact) < 4 * error, (estimate, error, exact)
    assert error < 0.02
    assert proposal.statistics.n_accepted > 200


def test_fused_scoring_on_a_diffusion_model_matches_log_prob():
    """Candidates and the current state score like log_prob; positions with NaN have no density."""
    torch.manual_seed(3)
    network = ConditionedMLP(6, width=16, depth=1).double()
    for parameter in network.parameters():
        parameter.data.normal_(0.0, 0.3)
    representation = Representation.fit(CartesianCoordinates(2), np.random.default_rng(4).normal(size=(200, 2, 3)), np.random.default_rng(0))
    model = DiffusionProposalModel(EDMDiffusion(network, DiffusionSettings(n_steps=8)), representation)
    mixture = TemperatureMixture(model, (1.0, 1.3))
    current = np.random.default_rng(5).normal(size=(2, 3))
    candidates, log_q, log_q_current = mixture.sample_and_score(16, TEMPERATURE, current,
                                                                generator=torch.Generator().manual_seed(6))
    assert np.max(np.abs(log_q - mixture.log_prob(candidates, TEMPERATURE))) < 1e-9
    assert abs(log_q_current - mixture.log_prob(current[None], TEMPERATURE)[0]) < 1e-9
    expected = np.logaddexp(np.log(0.5) + model.log_prob(candidates, TEMPERATURE),
                            np.log(0.5) + model.log_prob(candidates, 1.3 * TEMPERATURE))
    assert np.max(np.abs(log_q - expected)) < 1e-9
    outside = np.full((1, 2, 3), np.nan)
    assert np.isnan(mixture.log_prob(outside, TEMPERATURE)).all()


def test_bad_mixtures_are_refused(double_well):
    model = scaled_model(double_well)
    for factors, weights in (((), None), ((1.0, -2.0), None), ((1.0, 2.0), (1.0,)), ((1.0, 2.0), (1.0, 0.0))):
        with pytest.raises(ValueError):
            TemperatureMixture(model, factors, weights)
