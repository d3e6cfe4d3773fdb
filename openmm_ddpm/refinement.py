"""Refine the model of a finished run on its whole buffer, for analysis and generation.

The online model sees each streamed frame only a few times; a model trained
longer on the same frames is what reweighting at temperatures the run never
simulated needs (benchmarks/results/alanine_dipeptide_long_training_*.json).
In a new run, the training setting ``refine_steps`` does this at the freeze,
before the production phase. For a run that is already finished, this
module does it after the fact.

The refined model has seen production-phase frames, so it is not the model
the run's chain used; it serves reweighting and generation (importance
sampling is consistent for any proposal density that covers the target),
never a retroactive change of the run's proposals.
"""
from openmm_ddpm.sampler import export_proposal_model, load_proposal_model


def refine_proposal_model(storage, n_steps, output):
    """Train a finished run's model ``n_steps`` more steps on its whole buffer and export it.

    Parameters
    ----------
    storage : str
        openmmtools storage file of a DDPM sampler run (its newest intact
        checkpoint supplies the model, optimizer and buffer).
    n_steps : int
        Optimizer steps (``OnlineDDPM.refine``: cosine decay of the learning
        rate from the run's ``learning_rate`` to its ``final_learning_rate``).
        Runs on the device of the run's model settings ('auto': CUDA if
        present).
    output : str
        Model file to write (``export_proposal_model`` format; load it with
        ``load_exported_model``).

    Returns
    -------
    model : openmm_ddpm.model.DiffusionProposalModel
        The refined, frozen float64 model.
    sha256 : str
        SHA-256 of ``output``.
    """
    if int(n_steps) < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    _, ddpm, iteration = load_proposal_model(storage)
    ddpm.refine(int(n_steps))  # logs its progress
    return ddpm.proposal_model, export_proposal_model(ddpm, output, iteration)
