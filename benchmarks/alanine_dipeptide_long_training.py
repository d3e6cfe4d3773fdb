"""Benchmark: a longer-trained (GPU) model on a run's frames, judged by reweighting at never-simulated temperatures.

The online run trains ~20k steps on one CPU core. This asks what more
training and a wider network buy, with the quantities the molecules issue
is judged by: expected MH acceptance at 300 K, and reweighted P(phi > 0)
at temperatures the run never simulated, against a plain reference run
there. It comes in three steps, so the torch-only middle one can run on a
GPU machine that has no OpenMM:

1. ``prepare`` (CPU, OpenMM): the buffer of a finished run is split
   (oldest frames train, newest are held out); the representation is
   fitted on the training frames as the sampler does; training frames are
   relabelled and encoded to standardized features once (stored as float16:
   ~1e-3 of their spread, far below the smallest noise level, and it lets
   300k frames travel to a GPU machine); held-out frames
   at the target temperature get their log-det, rotor multiplicity and
   reduced potential. Writes ``features.npz`` and ``representation.pt``
   (an ``export_proposal_model`` file whose weights are not used).
2. ``train`` (torch only; CUDA if present): trains a ``ConditionedMLP``
   diffusion model on the features for a wall-clock budget with cosine
   learning-rate decay over it and EMA weights, then draws model samples
   with exact log q at each requested temperature and encodes the held-out
   frames. Writes ``<name>_weights.pt`` and ``<name>_samples.pt``.
3. ``score`` (CPU, OpenMM): decodes the samples to positions (log q of
   positions = log q of features - log|det| of the decoding + rotor
   multiplicity, as ``DiffusionProposalModel`` does), computes their
   weights exp(-u - log q), and reports ESS and reweighted P(phi > 0) per
   temperature against the reference, and the expected acceptance.
   A few samples are rescored on the CPU with ``log_prob`` as a check
   that the GPU densities are the model's.

python benchmarks/alanine_dipeptide_long_training.py prepare --from-run RUN/run.nc --output DIR
python benchmarks/alanine_dipeptide_long_training.py train --data DIR/features.npz --name NAME --width 512 --depth 4 --seconds 300 --output DIR
python benchmarks/alanine_dipeptide_long_training.py score --prepared DIR --name NAME --samples DIR --tag TAG
python benchmarks/alanine_dipeptide_long_training.py export --prepared DIR --name NAME --samples DIR --output model.pt

(4. ``export`` writes the trained model as an ``export_proposal_model`` file.)
"""
import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from provenance import command_line, write_result  # noqa: E402  (benchmarks/, the script's directory)

from openmm_ddpm import __version__  # noqa: E402
from openmm_ddpm.model import (  # noqa: E402
    ConditionedMLP,  # noqa: E402
    EDMDiffusion,  # noqa: E402
    OnlineTrainer,
    cosine_learning_rate,
)
from openmm_ddpm.settings import DiffusionSettings, TrainingSettings

REFERENCE_LADDER_KELVIN = (300.0, 381.67789096181775, 485.5933748302039, 617.800850567412, 786.0030855966228)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    prepare = steps.add_parser("prepare", help="encode a run's buffer (CPU, OpenMM)")
    prepare.add_argument("--from-run", required=True, help="storage (run.nc) of a finished DDPM run")
    prepare.add_argument("--output", required=True, help="folder for features.npz and representation.pt")
    prepare.add_argument("--temperature", type=float, default=300.0, help="target temperature, K")
    prepare.add_argument("--held-out-fraction", type=float, default=0.2)
    prepare.add_argument("--held-out-frames", type=int, default=2000, help="held-out frames at the target kept")
    prepare.add_argument("--max-train-frames", type=int, default=None, help="newest training frames kept (default: all)")
    prepare.add_argument("--seed", type=int, default=0)
    train = steps.add_parser("train", help="train and sample (torch only; CUDA if present)")
    train.add_argument("--data", required=True, help="features.npz of prepare")
    train.add_argument("--name", required=True)
    train.add_argument("--output", required=True, help="folder for <name>_weights.pt and <name>_samples.pt")
    train.add_argument("--width", type=int, default=256)
    train.add_argument("--depth", type=int, default=3)
    train.add_argument("--batch-size", type=int, default=256)
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--final-learning-rate", type=float, default=1e-5)
    train.add_argument("--ema-decay", type=float, default=0.999)
    train.add_argument("--seconds", type=float, default=300.0, help="training wall-clock budget, s")
    train.add_argument("--max-steps", type=int, default=10**9)
    train.add_argument("--samples", type=int, default=4096, help="model samples per temperature")
    train.add_argument("--temperatures", type=float, nargs="+", default=list(REFERENCE_LADDER_KELVIN), help="K")
    train.add_argument("--held-out-limit", type=int, default=None, help="held-out frames encoded (default: all prepared)")
    train.add_argument("--sample-batch", type=int, default=1024, help="samples per flow batch (each holds D copies in the Jacobian pass)")
    train.add_argument("--seed", type=int, default=0)
    score = steps.add_parser("score", help="weights, ESS and P(phi > 0) against the reference (CPU, OpenMM)")
    score.add_argument("--prepared", required=True, help="folder of prepare")
    score.add_argument("--samples", required=True, help="folder holding <name>_weights.pt and <name>_samples.pt")
    score.add_argument("--name", required=True)
    score.add_argument("--tag", required=True, help="result file benchmarks/results/alanine_dipeptide_long_training_<tag>.json")
    score.add_argument("--reference", default=os.path.join(HERE, "results", "alanine_dipeptide_reference_vacuum.json"))
    score.add_argument("--train-command", default=None, help="the train command, recorded in the result")
    export = steps.add_parser("export", help="write the trained model as an export_proposal_model file")
    export.add_argument("--prepared", required=True, help="folder of prepare")
    export.add_argument("--samples", required=True, help="folder holding <name>_weights.pt")
    export.add_argument("--name", required=True)
    export.add_argument("--output", required=True, help="model file (load with load_exported_model)")
    return parser.parse_args(argv)


# --- prepare ------------------------------------------------------------------------


def prepare(args):
    """Encode a finished run's buffer; write features.npz and representation.pt."""
    from alanine_dipeptide_offline import fresh_learner, split_buffer
    from openmm import unit
    from openmmtools import states

    from openmm_ddpm.analysis import backbone_dihedrals
    from openmm_ddpm.moves import reduced_potentials
    from openmm_ddpm.multistate import export_proposal_model, load_run

    run = load_run(args.from_run)

    _, source, iteration = run.model, run.learner, run.iteration
    train, held_out = split_buffer(source.buffer, args.held_out_fraction)
    if args.max_train_frames is not None:
        train = (train[0][-args.max_train_frames:], train[1][-args.max_train_frames:])
    settings = argparse.Namespace(absolute_torsions=not source.settings.representation.relative_sibling_torsions,
                                  width=source.settings.model.width, depth=source.settings.model.depth,
                                  sigma_min=source.settings.model.sigma_min,
                                  temperature_max_frequency=source.settings.model.temperature_max_frequency,
                                  learning_rate=1e-3, ema_decay=0.999, final_learning_rate=None,
                                  target_fraction=None, seed=args.seed, temperature=args.temperature)
    learner = fresh_learner(source, settings, train)
    learner._build_model(train[0].astype(np.float64))
    representation = learner.representation
    coordinates = representation.coordinates
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.output, exist_ok=True)
    export_proposal_model(learner, os.path.join(args.output, "representation.pt"), iteration)

    relabelled = coordinates.relabel(torch.as_tensor(train[0], dtype=torch.float64), rng)
    raw, _ = coordinates.forward(relabelled)
    keep = coordinates.in_domain(raw)
    train_z, _ = representation.standardizer.forward(raw[keep])
    train_kelvin = train[1][keep.numpy()]

    at_target = np.flatnonzero(np.isclose(held_out[1], args.temperature))
    picks = np.sort(rng.choice(at_target, size=min(args.held_out_frames, len(at_target)), replace=False))
    frames = coordinates.relabel(torch.as_tensor(held_out[0][picks], dtype=torch.float64), rng)
    held_z, logdet = representation.forward(frames)
    log_multiplicity = coordinates.log_multiplicity(frames)
    thermodynamic_state = states.ThermodynamicState(source.system, args.temperature * unit.kelvin)
    sampler_state = states.SamplerState(unit.Quantity(frames[0].numpy(), unit.nanometer))
    u = reduced_potentials(thermodynamic_state, sampler_state, frames.numpy())
    topology = _topology(source.system)
    phi, _ = backbone_dihedrals(frames.numpy(), topology)
    model = source.settings.model
    np.savez(os.path.join(args.output, "features.npz"),
             train_z=train_z.numpy().astype(np.float16), train_kelvin=train_kelvin.astype(np.float32),
             held_out_z=held_z.numpy(), held_out_logdet=(logdet + log_multiplicity).numpy(),
             held_out_reduced_potential=u, held_out_phi=phi[:, 0], target_kelvin=args.temperature,
             sigma_min=model.sigma_min, sigma_max=model.sigma_max, n_steps=model.n_steps,
             temperature_max_frequency=model.temperature_max_frequency)
    phi_train, _ = backbone_dihedrals(train[0], topology)
    info = {"command": _command("prepare"), "source_run": os.path.abspath(args.from_run), "source_iteration": iteration,
            "train_frames_used": int(keep.sum()), "train_frames_outside_rotor_windows": int((~keep).sum()),
            "held_out_frames": len(picks),
            "train_phi_positive_share_per_temperature": {
                f"{t:.1f}": float(np.mean(phi_train[np.isclose(train[1], t), 0] > 0)) for t in np.unique(train[1])}}
    with open(os.path.join(args.output, "prepare.json"), "w") as stream:
        json.dump(info, stream, indent=2)
    print(json.dumps(info, indent=2))


def _topology(system):
    """The alanine dipeptide topology of the System (the benchmark's molecule)."""
    from openmmtools import testsystems

    test_system = testsystems.AlanineDipeptideVacuum(constraints=None)
    if test_system.system.getNumParticles() != system.getNumParticles():
        raise ValueError("this benchmark expects an alanine dipeptide run")
    return test_system.topology


def _command(step):
    return command_line(__file__)


# --- train (torch only) ---------------------------------------------------------------


def train_and_sample(args):
    """Train on the features for a time budget, then sample and encode; write two .pt files."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = np.load(args.data)
    torch.manual_seed(args.seed)
    network = ConditionedMLP(data["train_z"].shape[1], width=args.width, depth=args.depth,
                             temperature_max_frequency=float(data["temperature_max_frequency"])).to(device)
    settings = DiffusionSettings(sigma_min=float(data["sigma_min"]), sigma_max=float(data["sigma_max"]),
                                 n_steps=int(data["n_steps"]))
    trainer = OnlineTrainer(EDMDiffusion(network, settings),
                            TrainingSettings(batch_size=args.batch_size, learning_rate=args.learning_rate,
                                             ema_decay=args.ema_decay), seed=args.seed)
    features = torch.as_tensor(data["train_z"].astype(np.float32), device=device)
    kelvin = torch.as_tensor(data["train_kelvin"], device=device)
    start, history = time.perf_counter(), []
    while trainer.n_steps_done < args.max_steps:
        progress = (time.perf_counter() - start) / args.seconds
        if progress >= 1.0:
            break
        trainer.set_learning_rate(cosine_learning_rate(progress, args.learning_rate, args.final_learning_rate))
        loss = trainer.step(features, kelvin, 200)
        if trainer.n_steps_done % 5000 < 200:
            history.append({"steps": trainer.n_steps_done, "wall_s": round(time.perf_counter() - start, 1), "loss": loss})
            print(f"[{args.name}] {history[-1]}", flush=True)
    train_seconds = time.perf_counter() - start
    model = trainer.frozen_diffusion()
    samples = {}
    for k, temperature in enumerate(args.temperatures):
        parts = [model.sample_flow(n, temperature, generator=torch.Generator().manual_seed(args.seed * 1000 + k * 100 + i))
                 for i, n in enumerate(_batches(args.samples, args.sample_batch))]
        samples[f"{temperature:.4f}"] = {"x": torch.cat([p.x for p in parts]).cpu(),
                                         "log_prob": torch.cat([p.log_prob for p in parts]).cpu()}
    held_out_z = torch.as_tensor(data["held_out_z"][:args.held_out_limit])
    held_out = torch.cat([model.encode(part, float(data["target_kelvin"])).log_prob
                          for part in torch.split(held_out_z, args.sample_batch)])
    sample_seconds = time.perf_counter() - start - train_seconds
    os.makedirs(args.output, exist_ok=True)
    torch.save({"network_config": network.config(),
                "ema_network": {k: v.cpu() for k, v in trainer.ema_network.state_dict().items()}},
               os.path.join(args.output, f"{args.name}_weights.pt"))
    torch.save({"command": _command("train"), "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
                "torch": torch.__version__, "train_steps": trainer.n_steps_done, "train_seconds": train_seconds,
                "sample_seconds": sample_seconds, "history": history, "samples": samples,
                "held_out_log_prob": held_out.cpu(), "settings": vars(args)},
               os.path.join(args.output, f"{args.name}_samples.pt"))
    print(f"[{args.name}] {trainer.n_steps_done} steps in {train_seconds:.0f} s, sampling {sample_seconds:.0f} s", flush=True)


def _batches(total, size):
    return [min(size, total - start) for start in range(0, total, size)]


# --- score ------------------------------------------------------------------------------


def score(args):
    """Weights of the samples, ESS and reweighted P(phi > 0) per temperature, expected acceptance."""
    import openmm
    from openmm import unit
    from openmmtools import states, testsystems

    from openmm_ddpm.analysis import (
        backbone_dihedrals,
        expected_mh_acceptance,
        reweighted_expectation,
    )
    from openmm_ddpm.model import DiffusionProposalModel
    from openmm_ddpm.moves import reduced_potentials
    from openmm_ddpm.multistate import load_exported_model

    test_system = testsystems.AlanineDipeptideVacuum(constraints=None)
    system = test_system.system
    skeleton = load_exported_model(os.path.join(args.prepared, "representation.pt"), system)
    representation = skeleton.representation
    coordinates = representation.coordinates
    data = np.load(os.path.join(args.prepared, "features.npz"))
    weights = torch.load(os.path.join(args.samples, f"{args.name}_weights.pt"), weights_only=True)
    run = torch.load(os.path.join(args.samples, f"{args.name}_samples.pt"), weights_only=False)
    network = ConditionedMLP(**weights["network_config"])
    network.load_state_dict(weights["ema_network"])
    model = DiffusionProposalModel(EDMDiffusion(network.double().eval().requires_grad_(False), skeleton.diffusion.settings),
                                   representation)
    reference = json.load(open(args.reference))
    reference_p = dict(zip(np.round(reference["temperatures_kelvin"], 3), reference["p_phi_positive_per_state"]))
    reference_error = dict(zip(np.round(reference["temperatures_kelvin"], 3), reference["p_phi_positive_error_per_state"]))
    frame = representation.frame(torch.as_tensor(skeleton_reference(args.prepared)))
    per_temperature, log_w_model_target, consistency = [], None, None
    for key, sample in run["samples"].items():
        kelvin = float(key)
        n = sample["x"].shape[0]
        positions, logdet_inverse, valid = representation.inverse(sample["x"].to(torch.float64), frame.expand(n, -1))
        log_q = sample["log_prob"].double() - logdet_inverse + coordinates.log_multiplicity(positions)
        valid = valid & torch.isfinite(log_q)
        positions = positions.numpy()
        state = states.ThermodynamicState(system, kelvin * unit.kelvin)
        u = reduced_potentials(state, states.SamplerState(unit.Quantity(positions[0], unit.nanometer)),
                               np.where(valid.numpy()[:, None, None], positions, np.nan))
        log_w = np.where(valid.numpy(), -u - log_q.numpy(), -np.inf)
        log_w[~np.isfinite(log_w)] = -np.inf
        phi = backbone_dihedrals(positions, test_system.topology)[0][:, 0]  # NaN for invalid (NaN) positions
        positive = np.nan_to_num(phi) > 0
        estimate = reweighted_expectation(log_w, positive.astype(float))
        p, p_error, ess = estimate.mean, estimate.error, estimate.ess
        row = {"temperature_kelvin": kelvin, "simulated_by_the_run": bool(np.isclose(kelvin, float(data["target_kelvin"]))),
               "n_samples": n, "outside_support_fraction": float(np.mean(~np.isfinite(log_w))),
               "ess": float(ess), "ess_fraction": float(ess / n),
               "p_phi_positive_reweighted": float(p), "p_phi_positive_reweighted_error": float(p_error),
               "p_phi_positive_unweighted_model": float(np.mean(positive[np.isfinite(log_w)])),
               "median_log_w_phi_positive_minus_negative": _basin_log_w_gap(log_w, positive)}
        ref = reference_p.get(round(kelvin, 3))
        if ref is not None:
            row["p_phi_positive_reference"] = ref
            row["p_phi_positive_reference_error"] = reference_error[round(kelvin, 3)]
            row["deviation_sigma"] = float((p - ref) / math.hypot(p_error, reference_error[round(kelvin, 3)]))
        per_temperature.append(row)
        print(json.dumps(row), flush=True)
        if np.isclose(kelvin, float(data["target_kelvin"])):
            log_w_model_target = log_w
            consistency = _cpu_rescoring(model, positions, log_q.numpy(), valid.numpy(), kelvin)
    n_held_out = run["held_out_log_prob"].shape[0]
    log_w_held_out = -data["held_out_reduced_potential"][:n_held_out] - (run["held_out_log_prob"].double().numpy()
                                                                          + data["held_out_logdet"][:n_held_out])
    result = {
        "command": _command("score"), "train_command": args.train_command or run["command"],
        "prepare": json.load(open(os.path.join(args.prepared, "prepare.json"))),
        "training": {"device": run["device"], "torch": run["torch"], "steps": run["train_steps"],
                     "train_seconds": run["train_seconds"], "sample_seconds": run["sample_seconds"],
                     "network": weights["network_config"], "settings": run["settings"], "history": run["history"]},
        "target_kelvin": float(data["target_kelvin"]),
        "expected_mh_acceptance": (expected_mh_acceptance(log_w_held_out, log_w_model_target)
                                   if log_w_model_target is not None else None),
        "held_out_outside_support_fraction": float(np.mean(~np.isfinite(log_w_held_out))),
        "flow_vs_encoded_log_q_max_abs_difference": consistency,
        "per_temperature": per_temperature,
        "package_version": __version__, "openmm": openmm.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (scoring)",
    }
    output = os.path.join(HERE, "results", f"alanine_dipeptide_long_training_{args.tag}.json")
    write_result(output, result)
    print(f"expected MH acceptance {result['expected_mh_acceptance']}; log q along the flow vs by encoding on the CPU: {consistency}")
    print(f"wrote {output}")
    return result


def skeleton_reference(prepared):
    state = torch.load(os.path.join(prepared, "representation.pt"), weights_only=True)
    return state["reference_positions"].numpy()


def _basin_log_w_gap(log_w, positive):
    """Median log w of phi > 0 samples minus that of phi < 0 samples (NaN if a side is empty).

    Near 0 when the model shapes both basins alike; the median, because a few
    high-energy samples (log w of -1000) dominate a mean."""
    finite = np.isfinite(log_w)
    if not (finite & positive).any() or not (finite & ~positive).any():
        return float("nan")
    return float(np.median(log_w[finite & positive]) - np.median(log_w[finite & ~positive]))


def _cpu_rescoring(model, positions, log_q, valid, kelvin, n=8):
    """Largest |log q accumulated along the flow (where it was trained) - log_prob by encoding on the CPU| over n valid samples."""
    from openmm import unit

    chosen = np.flatnonzero(valid)[:n]
    cpu = model.log_prob(positions[chosen], kelvin * unit.kelvin)
    return float(np.max(np.abs(cpu - log_q[chosen])))


# --- export ------------------------------------------------------------------------------


def export(args):
    """The prepared representation with the trained EMA weights, in ``export_proposal_model``'s format."""
    from openmm_ddpm.multistate.checkpoints import save_atomic

    state = torch.load(os.path.join(args.prepared, "representation.pt"), weights_only=True)
    weights = torch.load(os.path.join(args.samples, f"{args.name}_weights.pt"), weights_only=True)
    config, model = weights["network_config"], state["settings"]["model"]
    if (config["width"], config["depth"]) != (model["width"], model["depth"]):
        state["settings"]["model"] = dict(model, width=config["width"], depth=config["depth"])
    if not math.isclose(config["temperature_max_frequency"], model["temperature_max_frequency"], rel_tol=1e-6):
        raise ValueError("the trained network's temperature embedding differs from the prepared settings")
    state["ema_network"] = weights["ema_network"]
    state["trained_by"] = torch.load(os.path.join(args.samples, f"{args.name}_samples.pt"), weights_only=False)["command"]
    digest = save_atomic(state, args.output)
    print(f"wrote {args.output} (sha256 {digest})")
    return digest


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.step != "train" or not torch.cuda.is_available():
        torch.set_num_threads(1)
    {"prepare": prepare, "train": train_and_sample, "score": score, "export": export}[args.step](args)


if __name__ == "__main__":
    main()
