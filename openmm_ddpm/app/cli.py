"""The ``openmm-ddpm`` command line: ``openmm-ddpm run [CONFIG.yaml] [--out DIR]``, ``openmm-ddpm analyze DIR``,
``openmm-ddpm sample DIR --temperature 280K -n 1000``,
``openmm-ddpm train STORAGE.nc --pdb STRUCTURE.pdb --out DIR``.

A user's mistake ends in one line that says what to fix (exit status 2);
``--debug`` shows the traceback instead.
"""
import argparse
import logging
import sys

from openmm_ddpm._version import __version__


def build_parser():
    """Return the argument parser of the ``openmm-ddpm`` command."""
    parser = argparse.ArgumentParser(
        prog="openmm-ddpm",
        description="Exact diffusion-model proposals for OpenMM replica exchange.",
    )
    parser.add_argument("--version", action="version", version=f"openmm-ddpm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    common = argparse.ArgumentParser(add_help=False)  # --debug after the command too (not overriding one before it)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", parents=[common],
                              help="run (or resume) augmented parallel tempering; everything goes into --out",
                              description="Run augmented parallel tempering from a YAML config (without one: the "
                                          "built-in alanine dipeptide run, ~11.5 minutes on one CPU core). Running again "
                                          "on the same --out resumes; another config there is refused.")
    run.add_argument("config", nargs="?", help="YAML run configuration (openmm_ddpm.app.config)")
    run.add_argument("--out", default="openmm_ddpm_run", help="the run directory (default: %(default)s)")
    run.add_argument("--iterations", type=int, help="override the config's iterations (e.g. to extend a run)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    analyze = commands.add_parser("analyze", parents=[common], help="write DIR/report.md with plots and DIR/summary.json",
                                  description="Report of a run directory: free-energy surfaces and P(phi > 0) / dF per "
                                              "state and by MBAR (peptides), swap and proposal acceptance, time split.")
    analyze.add_argument("directory", help="the --out of a run")
    analyze.add_argument("--model-samples", type=int, default=256,
                         help="model samples at the target temperature to set beside the replicas (0: none; "
                              "default: %(default)s)")
    analyze.add_argument("--cv", action="append", default=[], metavar="I,J[,K[,L]]",
                         help="a collective variable: 2 atom indices (0-based) a distance, 3 an angle, 4 a dihedral; "
                              "give it once for free-energy profiles, twice for surfaces, per temperature")
    sample = commands.add_parser("sample", parents=[common],
                                 help="weighted model samples at any temperature: trajectory + weights",
                                 description="Draw from a run's frozen model at a temperature, simulated or not, with "
                                             "exact importance weights exp(-u) / q; prints the ESS.")
    sample.add_argument("directory", help="the --out of a run")
    sample.add_argument("--temperature", required=True, help="e.g. 280K")
    sample.add_argument("-n", type=int, default=1000, help="samples (default: %(default)s)")
    sample.add_argument("--out", default="samples.dcd", help="trajectory, .dcd or .pdb (default: %(default)s)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--region", action="append", default=[], metavar="I,J[,K[,L]]:LOW:HIGH",
                        help="a range of a collective variable (atoms 0-based; nm for a distance, degrees for an angle "
                             "or dihedral): prints its reweighted population and the draws and ESS inside it, which "
                             "are what that population rests on; repeatable. E.g. 4,6,8,14:0:180 (phi > 0 of "
                             "alanine dipeptide)")
    sample.add_argument("--stratify", action="store_true",
                        help="weigh the (one) --region from its own model: short MD at the temperature inside it, "
                             "seeded from the run's frames there, trains a model of the region (DIR/region_model.pt); "
                             "the region's population then comes from that model's draws, the rest from the run's "
                             "model's, all weights exact. For a rare basin the run's model draws too seldom; cut the "
                             "region at barriers")
    sample.add_argument("--region-seeds", type=int, default=32, help="--stratify: MD starts (default: %(default)s)")
    sample.add_argument("--region-md-ps", type=float, default=20.0,
                        help="--stratify: ps of MD from each start, after 2 ps of relaxation (default: %(default)s)")
    sample.add_argument("--region-steps", type=int, default=20_000,
                        help="--stratify: training steps of the region model (default: %(default)s)")
    train = commands.add_parser("train", parents=[common], help="a model from a plain openmmtools replica-exchange storage",
                                description="Train a temperature-conditioned model on every state's frames of a "
                                            "finished openmmtools temperature-ladder run (every atom stored as an "
                                            "analysis particle; in explicit solvent, the solute's atoms, and the "
                                            "model is of the solute alone: its samples cannot be reweighted); "
                                            "'sample' then works on --out.")
    train.add_argument("storage", help="the run's .nc storage")
    train.add_argument("--pdb", required=True, help="the structure the run's System was built from")
    train.add_argument("--out", default="openmm_ddpm_model", help="directory to write (default: %(default)s)")
    train.add_argument("--steps", type=int, default=20_000, help="optimizer steps (default: %(default)s)")
    train.add_argument("--config", help="YAML whose settings (model, representation, training) to train with")
    train.add_argument("--first-iteration", type=int, default=1, help="leave out the iterations before it")
    train.add_argument("--hold-out", type=int, action="append", default=[], metavar="STATE",
                       help="a state index whose frames are left out of training (to measure the model there; repeatable)")
    return parser


class LibraryNoise(logging.Filter):
    """Drops the banners libraries log on every command: pymbar's JAX advert and timeseries caveat, openmmtools'
    'experimental API' notice. Every other warning still shows."""

    def filter(self, record):
        if record.name.startswith("pymbar") and record.levelno <= logging.WARNING:
            return False
        return "API is experimental" not in record.getMessage()


class _Stderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a record comes (not the stream of the moment it was made)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure_console():
    """Warnings and errors on stderr, without the libraries' banners (the progress bar says what INFO would; a run's
    run.log keeps INFO)."""
    root = logging.getLogger()
    if not any(getattr(handler, "openmm_ddpm_console", False) for handler in root.handlers):
        console = _Stderr()
        console.setLevel(logging.WARNING)
        console.setFormatter(logging.Formatter("%(message)s"))
        console.addFilter(LibraryNoise())
        console.openmm_ddpm_console = True
        root.addHandler(console)


def main(argv=None):
    """Entry point of the ``openmm-ddpm`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    configure_console()
    try:
        return {"run": _run, "analyze": _analyze, "sample": _sample, "train": _train}[args.command](args)
    except Exception as error:  # a user's mistake: one line, unless --debug
        from openmm_ddpm.app.config import ConfigError

        if args.debug or not isinstance(error, (ConfigError, FileNotFoundError, ValueError)):
            raise
        hint = "" if isinstance(error, ConfigError) else " (--debug shows the traceback)"
        print(f"openmm-ddpm {args.command}: error: {error}{hint}", file=sys.stderr)
        return 2


def _run(args):
    import dataclasses

    from openmm_ddpm.app.config import ConfigError, load_config
    from openmm_ddpm.app.run import run

    config = load_config(args.config)
    if args.iterations is not None:
        if args.iterations < 1:
            raise ConfigError(f"--iterations must be a positive integer, got {args.iterations}")
        config = dataclasses.replace(config, iterations=args.iterations)
    result = run(config, args.out, progress=not args.quiet)
    acceptance = result.production_acceptance
    print(f"{result.directory}: {result.iterations} iterations ({result.iterations - result.resumed_from} in "
          f"{result.wall_seconds:.0f} s), production acceptance at the target state "
          + (f"{acceptance:.2f}" if acceptance == acceptance else
             "- (plain replica exchange, see the warning)" if result.plain_reason else "- (no production moves yet)")
          + (f"; model: {result.model_path}" if result.model_path else ""))
    return 0


def _analyze(args):
    from openmm_ddpm.app.report import analyze

    report = analyze(args.directory, model_samples=args.model_samples, collective_variables=args.cv)
    print(f"{args.directory}/report.md: {report.iterations} iterations, analysed from {report.first_iteration}; "
          f"production acceptance {report.production_acceptance:.2f}; wall {report.wall_seconds:.0f} s (MD, swaps "
          f"and storage {report.other_seconds:.0f}, training {report.training_seconds:.0f}, proposals "
          f"{report.proposal_seconds:.0f})")
    for row in report.per_state:
        print(f"  {row['temperature_kelvin']:7.1f} K  P(phi > 0) by MBAR {row['p_mbar']:.4f} +- {row['p_mbar_error']:.4f}"
              f"  dF {row['df_mbar_kT']:.2f} +- {row['df_mbar_error_kT']:.2f} kT")
    if report.model_samples:
        m = report.model_samples
        print(f"  model at {m['temperature_kelvin']:.1f} K, {'reweighted' if m['reweighted'] else 'as drawn (approximate)'}: P(phi > 0) {m['p']:.4f} +- {m['p_error']:.4f} "
              f"(ESS {m['ess']:.0f} of {m['samples']}; in phi > 0 {m['ess_in_phi_positive']:.1f} of "
              f"{m['draws_in_phi_positive']} draws there, below ~20 not to be trusted)")
    return 0


def _sample(args):
    import numpy as np

    from openmm_ddpm.app.config import ConfigError
    from openmm_ddpm.app.sample import (LOW_ESS, LOW_REGION_ESS, draw_weighted, parse_region, parse_temperature,
                                        region_estimate, run_topology, write_samples)

    if args.n < 1:
        raise ConfigError(f"-n must be a positive integer, got {args.n}")
    temperature = parse_temperature(args.temperature)
    topology = run_topology(args.directory) if args.region else None
    regions = [parse_region(text, topology.getNumAtoms()) for text in args.region]  # refused before any drawing
    if args.stratify:
        return _sample_stratified(args, temperature, regions)
    samples = draw_weighted(args.directory, temperature, args.n, seed=args.seed)
    weights_path = write_samples(samples, args.directory, args.out)
    outside = int(np.sum(~np.all(np.isfinite(samples.positions), axis=(1, 2))))
    print(f"{args.out}: {args.n - outside} samples at {args.temperature} ({outside} drawn outside the model's domain, "
          f"weight 0, left out), weights in {weights_path}; ESS {samples.ess:.1f} ({samples.ess / args.n:.1%})")
    if not samples.reweighted:
        print("approximate: a solute-only model of a solvated run; its samples are not reweighted (the water is not in "
              "the model), every weight is equal and averages over them carry the model's error", file=sys.stderr)
    elif samples.ess < LOW_ESS:
        print(f"warning: ESS {samples.ess:.1f} < {LOW_ESS}: weighted averages over these samples are not to be trusted; "
              "draw more, or train the model longer", file=sys.stderr)
    for region in regions:
        estimate = region_estimate(samples, topology, region)
        print(f"region {region.text}: population {estimate.population:.4g} +- {estimate.error:.2g}, resting on "
              f"{estimate.draws} draws inside, ESS {estimate.ess:.1f}")
        if samples.reweighted and not estimate.trusted:
            print(f"warning: region {region.text}: ESS {estimate.ess:.1f} < {LOW_REGION_ESS} inside it: its population "
                  "and error bar are not to be trusted (the model seldom draws where its weight is); draw more, or "
                  "give the model more frames of that region", file=sys.stderr)
    return 0


def _sample_stratified(args, temperature, regions):
    from openmm_ddpm.app.config import ConfigError
    from openmm_ddpm.app.sample import LOW_REGION_ESS, write_samples
    from openmm_ddpm.app.stratify import FEW_REGION_FRAMES, stratified_draws

    if len(regions) != 1:
        raise ConfigError("--stratify weighs one region: give exactly one --region")
    if args.region_seeds < 1 or args.region_md_ps <= 0 or args.region_steps < 1:
        raise ConfigError("--region-seeds, --region-md-ps and --region-steps must be positive")
    result = stratified_draws(args.directory, temperature, regions[0], args.n, seed=args.seed, n_seeds=args.region_seeds,
                              md_ps=args.region_md_ps, steps=args.region_steps)
    weights_path = write_samples(result.samples, args.directory, args.out)
    region, rest = result.region, result.rest
    print(f"{args.out}: {2 * args.n} draws at {args.temperature} ({args.n} from each model), weights in {weights_path}")
    print(f"region {regions[0].text} by stratified importance sampling: population {result.population:.4g} +- "
          f"{result.population_error:.2g}, dF = -ln(Z_region / Z_rest) = {result.df_kt:.3f} +- {result.df_error_kt:.3f} "
          f"kT; ESS inside the region {region.ess:.1f} of {region.draws} (its model, {result.region_frames} MD "
          f"frames; {result.region_model_path}), outside {rest.ess:.1f} of {rest.draws} (the run's model)")
    if result.region_frames < FEW_REGION_FRAMES:
        print(f"warning: the region model learned from {result.region_frames} frames (< {FEW_REGION_FRAMES}): "
              "give more --region-seeds or --region-md-ps", file=sys.stderr)
    for label, stratum in (("inside the region", region), ("outside it", rest)):
        if stratum.ess < LOW_REGION_ESS:
            print(f"warning: ESS {stratum.ess:.1f} < {LOW_REGION_ESS} {label}: that stratum's estimate is not to be "
                  "trusted; draw more, train longer, or cut the region at barriers", file=sys.stderr)
    return 0


def _train(args):
    from openmm_ddpm.app.config import ConfigError, load_config
    from openmm_ddpm.app.train import train_from_storage

    if args.steps < 1 or args.first_iteration < 1:
        raise ConfigError("--steps and --first-iteration must be positive integers")
    settings = load_config(args.config).settings if args.config else None
    result = train_from_storage(args.storage, args.pdb, args.out, args.steps, settings, args.first_iteration,
                                args.hold_out)
    print(f"{result.model_path}: trained {result.steps} steps on {result.frames} frames at "
          f"{len(result.temperatures_kelvin) - len(set(args.hold_out))} temperatures, final loss {result.final_loss:.3f}; "
          f"draw with: openmm-ddpm sample {args.out} --temperature 300K")
    if result.solute_atoms is not None:
        print(f"solvated run: the model is of the solute's {len(result.solute_atoms)} atoms alone; its samples are not "
              "Boltzmann-weighted in water (approximate)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
