"""Plain against augmented parallel tempering on the same clock: dF(300 K) and its error against wall time.

For each seed the two samplers run at the same time, one per core, each
pinned to its core with one thread (the cores swap samplers from one seed to
the next), on the same system, ladder, MD per iteration, platform and
wall-clock budget; training and proposals count in the augmented sampler's
time. Each writes a per-iteration trace (``remd_traces.py``); the analysis
then follows, at ``--points`` times, the estimate of dF(300 K) =
-ln(p / (1 - p)) of a basin (phi > 0 for alanine dipeptide, the right well of
the double well) with its error bar:

- ``mbar``: MBAR over every state's samples, thinned by the largest
  statistical inefficiency (``openmm_ddpm.analysis.mbar_expectations``),
  the first 10 % of the iterations dropped (both samplers);
- ``recycled`` (augmented only): the waste-recycled average over all K + 1
  points of every production move at 300 K (``MoveOutcome.recycled``),
  with a batch-means error (10 batches).

Time to |dF - ref| <= band: the first evaluation time after which the
estimate stays inside the band and its error bar is below the band.
Efficiency: 1 / (error^2 t) at the end of the budget, and 1 / (mean
squared deviation from the reference over the seeds x t), which also
counts a bias the error bars miss. Results:
``benchmarks/results/compare_<system>.json`` and ``.png`` (``--quick``:
``compare_<system>_quick``).

python benchmarks/compare_remd.py --system double_well|alanine_vacuum_6|alanine_vacuum_2|alanine_implicit_6
    [--minutes M] [--seeds N] [--quick] [--traces DIR] [--analyze-only]
    [--all-at-once [--first-core C]] [--runs-only] [--tag NAME]
python benchmarks/compare_remd.py --reference alanine_vacuum_6 --minutes 60 [--runs N]   (reference: N independent plain
    runs by MBAR, at once, combined by inverse variance)
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

import remd_traces
from provenance import command_line, write_result  # noqa: E402  (benchmarks/, the script's directory)

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
SAMPLERS = ("plain", "augmented")
BANDS = (0.2, 0.1)
QUICK_SECONDS = 90


def trace_path(traces, system, kind, seed):
    return os.path.join(traces, f"{system}_{kind}_seed{seed}.npz")


def spawn_worker(kind, system, seed, seconds, traces, core):
    """One sampler's run in a subprocess pinned to ``core`` with one thread; its log beside its trace."""
    argv = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--system", system, "--seed", str(seed),
            "--seconds", str(seconds), "--traces", traces, "--core", str(core)]
    environment = dict(os.environ, OMP_NUM_THREADS="1", OPENMM_CPU_THREADS="1", MKL_NUM_THREADS="1")
    log = open(trace_path(traces, system, kind, seed).replace(".npz", ".log"), "w")
    return subprocess.Popen(argv, env=environment, stdout=log, stderr=subprocess.STDOUT)


def wait_for(processes, traces):
    codes = [p.wait() for p in processes]
    if any(codes):
        raise RuntimeError(f"a worker failed (exit codes {codes}): see the .log files in {traces}")


def run_pair(system, seed, seconds, traces, swap_cores, one_core=False):
    """Both samplers for one seed, each pinned to one core with one thread; waits for both.

    At once on two cores; with ``one_core``, one after the other on the first
    core of the affinity set (the order alternating from seed to seed), when
    the other core is busy.
    """
    cores = sorted(os.sched_getaffinity(0))[:2]
    cores = cores[::-1] if swap_cores and not one_core else cores
    kinds = SAMPLERS[::-1] if one_core and swap_cores else SAMPLERS
    processes = []
    for kind, core in zip(kinds, [cores[0]] * 2 if one_core else cores * 2):
        processes.append(spawn_worker(kind, system, seed, seconds, traces, core))
        if one_core:
            processes[-1].wait()
    wait_for(processes, traces)


def run_all_at_once(runs, system, seconds, traces, first_core):
    """Every (kind, seed) run at the same time, each pinned to its own core from ``first_core`` on (a many-core machine)."""
    cores = sorted(os.sched_getaffinity(0))[first_core:first_core + len(runs)]
    if len(cores) < len(runs):
        raise SystemExit(f"--all-at-once needs {len(runs)} cores from core {first_core} on; this machine has {os.cpu_count()}")
    wait_for([spawn_worker(kind, system, seed, seconds, traces, core) for (kind, seed), core in zip(runs, cores)], traces)


def worker(args):
    if args.core is not None:
        os.sched_setaffinity(0, {args.core})
    remd_traces.run_trace(remd_traces.SYSTEMS[args.system], args.worker, args.seed, args.seconds,
                          trace_path(args.traces, args.system, args.worker, args.seed))


# --- analysis of the traces ----------------------------------------------------------------


def free_energy(p, p_error):
    from openmm_ddpm.analysis import population_free_energy_kt

    return population_free_energy_kt(p, p_error) if np.isfinite(p) else (np.nan, np.nan)


def estimate_at(trace, t, estimator):
    """(dF, error) in kT from the trace's iterations done by wall time t (s); NaN if too few."""
    from openmm_ddpm.analysis import batch_means_standard_error, mbar_expectations

    done = trace["wall_seconds"] <= t
    if estimator == "recycled":
        series = trace["recycled"][done & trace["production"]]
        series = series[np.isfinite(series)]
        if len(series) < 20:
            return np.nan, np.nan
        return free_energy(series.mean(), batch_means_standard_error(series, n_batches=10))
    n = int(done.sum())
    first = n // 10
    if n - first < 20:
        return np.nan, np.nan
    observable = trace["in_basin"][first:n].astype(float)
    if observable[:, 0].min() == observable[:, 0].max() and observable.min() == observable.max():
        return free_energy(float(observable[0, 0]), 0.0)
    estimates = mbar_expectations(trace["reduced_potentials"][first:n], observable, trace["temperatures_kelvin"])
    return free_energy(estimates.mean[0], estimates.error[0])


def time_to_band(times, df, error, reference, band):
    """First time after which |dF - reference| <= band and error < band hold to the end (None if never)."""
    inside = np.isfinite(df) & (np.abs(df - reference) <= band) & (error < band)
    if not inside[-1]:
        return None
    outside = np.flatnonzero(~inside)
    return float(times[0] if len(outside) == 0 else times[outside[-1] + 1])


def efficiency(error, wall):
    """1 / (error^2 t) in 1/(kT^2 s); NaN where the error bar is 0 or undefined (no sample on one side)."""
    return float(1.0 / (error**2 * wall)) if np.isfinite(error) and error > 0 else float("nan")


def analyse_run(trace, estimator, reference, n_points):
    """Running estimate of one run; time to each band; final values and efficiency."""
    times = np.linspace(trace["wall_seconds"][-1] / n_points, trace["wall_seconds"][-1], n_points)
    df, error = np.array([estimate_at(trace, t, estimator) for t in times]).T
    wall = float(trace["wall_seconds"][-1])
    training, proposals = float(trace["training_seconds"].sum()), float(trace["proposal_seconds"].sum())
    return {
        "estimator": estimator, "times_s": times.tolist(), "df_kT_running": df.tolist(), "error_kT_running": error.tolist(),
        "wall_seconds": wall, "iterations": int(len(trace["wall_seconds"])), "df_kT": float(df[-1]),
        "df_error_kT": float(error[-1]), "efficiency_per_kT2_s": efficiency(error[-1], wall),
        **{f"time_to_{band}kT_s": time_to_band(times, df, error, reference, band) for band in BANDS},
        "time_split_s": {"training": training, "proposals": proposals, "md_exchange_storage": wall - training - proposals},
        **_move_statistics(trace),
    }


def _move_statistics(trace):
    """Production moves at 300 K: how many, their acceptance and mean ESS / (K + 1) (NaN for plain PT)."""
    production = trace["production"] & np.isfinite(trace["recycled"])
    if not production.any():
        return {"production_moves_at_300K": 0, "acceptance": float("nan"), "mean_ess_fraction": float("nan")}
    exchanges = trace["production"] & np.isfinite(trace.get("exchange_acceptance", np.full(len(production), np.nan)))
    return {"production_moves_at_300K": int(production.sum()), "acceptance": float(trace["accepted"][production].mean()),
            "mean_ess_fraction": float(np.nanmean(trace["ess_fraction"][production])),
            "production_mapped_exchanges": int(exchanges.sum()),
            "mapped_exchange_acceptance": float(trace["exchange_acceptance"][exchanges].mean()) if exchanges.any() else None}


def summarise(runs, reference):
    """Across seeds: median time to each band (None unless every seed got there), mean efficiency, seed spread."""
    finals = np.array([r["df_kT"] for r in runs])
    summary = {"seeds": len(runs), "df_kT_per_seed": finals.tolist(),
               "df_error_kT_per_seed": [r["df_error_kT"] for r in runs],
               "seed_spread_kT": float(finals.std(ddof=1)) if len(runs) > 1 else None,
               "rms_deviation_from_reference_kT": float(np.sqrt(np.mean((finals - reference) ** 2))),
               "mean_efficiency_per_kT2_s": float(np.mean([r["efficiency_per_kT2_s"] for r in runs])),  # NaN if any is
               # 1 / (mean squared deviation from the reference x t): counts a bias the error bar misses
               "efficiency_from_deviation_per_kT2_s": float(1.0 / (np.mean((finals - reference) ** 2) * np.mean(
                   [r["wall_seconds"] for r in runs]))),
               "wall_seconds": float(np.mean([r["wall_seconds"] for r in runs]))}
    for band in BANDS:
        times = [r[f"time_to_{band}kT_s"] for r in runs]
        summary[f"time_to_{band}kT_s_per_seed"] = times
        summary[f"time_to_{band}kT_s"] = None if None in times else float(np.median(times))
    summary["time_split_s"] = {key: float(np.mean([r["time_split_s"][key] for r in runs])) for key in runs[0]["time_split_s"]}
    return summary


def json_safe(value):
    """NaN and infinities as None (strict JSON), recursively."""
    if isinstance(value, dict):
        return {key: json_safe(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def ratio(numerator, denominator):
    if numerator is None or denominator is None or not np.isfinite(numerator) or not np.isfinite(denominator) or denominator == 0:
        return None
    return numerator / denominator


def analyse(system, seeds, traces, reference, n_points):
    """Every run's running estimates and the comparison's summary."""
    result = {"system": system, "reference_df_kT": reference, "bands_kT": list(BANDS), "samplers": {},
              "runs_machine": sorted({str(np.load(trace_path(traces, system, kind, seed)).get("machine", "not recorded"))
                                      for kind in SAMPLERS for seed in seeds})}
    for kind, estimator in (("plain", "mbar"), ("augmented", "mbar"), ("augmented", "recycled")):
        runs = [analyse_run(dict(np.load(trace_path(traces, system, kind, seed))), estimator, reference, n_points)
                for seed in seeds]
        name = kind if estimator == "mbar" else f"{kind}_{estimator}"
        result["samplers"][name] = {"runs": runs, **summarise(runs, reference)}
    plain = result["samplers"]["plain"]
    for name in ("augmented", "augmented_recycled"):
        augmented = result["samplers"][name]
        augmented["speedup_time_to_0.2kT"] = ratio(plain["time_to_0.2kT_s"], augmented["time_to_0.2kT_s"])
        augmented["efficiency_ratio"] = ratio(augmented["mean_efficiency_per_kT2_s"], plain["mean_efficiency_per_kT2_s"])
        augmented["efficiency_from_deviation_ratio"] = ratio(augmented["efficiency_from_deviation_per_kT2_s"],
                                                             plain["efficiency_from_deviation_per_kT2_s"])
    result["speedup_time_to_0.2kT"] = result["samplers"]["augmented"]["speedup_time_to_0.2kT"]
    result["efficiency_ratio"] = result["samplers"]["augmented"]["efficiency_ratio"]
    return result


def plot(result, path):
    """dF(300 K) with its error bar against wall time, every seed, and |dF - ref| and the error on log axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"plain": "tab:blue", "augmented": "tab:red", "augmented_recycled": "tab:orange"}
    reference = result["reference_df_kT"]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 7.0), sharex=True)
    for name, sampler in result["samplers"].items():
        for i, run in enumerate(sampler["runs"]):
            t = np.asarray(run["times_s"]) / 60.0
            df, error = np.asarray(run["df_kT_running"]), np.asarray(run["error_kT_running"])
            label = name if i == 0 else None
            top.plot(t, df, color=colours[name], label=label, lw=1.2)
            shown = np.isfinite(error) & (error < 1.5)  # wider bars would only fill the axis
            top.fill_between(t, df - error, df + error, where=shown, color=colours[name], alpha=0.12)
            bottom.plot(t, np.abs(df - reference), color=colours[name], lw=1.2, label=label and f"{name} |dF - ref|")
            bottom.plot(t, error, color=colours[name], lw=1.0, ls=":", label=label and f"{name} error bar")
    frozen = result["train_fraction"] * result["seconds_per_run"] / 60.0
    for axis in (top, bottom):
        axis.axvline(frozen, color="tab:red", lw=0.8, ls="--", label="augmented: model frozen" if axis is top else None)
    top.axhline(reference, color="black", lw=1.0, label=f"reference {reference:.2f} kT")
    top.axhspan(reference - 0.2, reference + 0.2, color="grey", alpha=0.2, label="+-0.2 kT")
    top.set_ylim(reference - 3.0, reference + 3.0)
    top.set_ylabel("dF(300 K) / kT")
    top.set_title(f"{result['system']}: {result['samplers']['plain']['seeds']} seeds each, same clock")
    top.legend(fontsize=7, loc="upper right")
    for band in BANDS:
        bottom.axhline(band, color="grey", lw=0.8, ls="--")
    bottom.set_yscale("log")
    bottom.set_ylim(1e-3, 10.0)
    bottom.set_xlabel("wall time / min (training and proposals included)")
    bottom.set_ylabel("kT")
    bottom.legend(fontsize=6, ncol=2, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def reference_df(system):
    """The reference dF(300 K) in kT and where it comes from."""
    if system == "double_well":
        populations = remd_traces.double_well.make_system().exact_populations(300.0 * remd_traces.unit.kelvin)
        p = 1.0 - populations.left
        return float(-np.log(p / (1.0 - p))), "exact, by quadrature (DoubleWell2D.exact_populations)"
    molecule = "vacuum" if "vacuum" in system else "implicit"
    path = os.path.join(RESULTS, f"compare_reference_{reference_name(system)}.json")
    if not os.path.exists(path) and reference_name(system).count("_") > 1:
        raise SystemExit(f"no reference for {system} yet: run compare_remd.py --reference {system} first")
    if not os.path.exists(path):  # no MBAR reference made yet: the earlier plain run's own 300 K estimate
        with open(os.path.join(RESULTS, f"alanine_dipeptide_reference_{molecule}.json")) as stream:
            stored = json.load(stream)
        return stored["df_phi_positive_vs_negative_kT"], stored["command"] + f" (+- {stored['df_error_kT']:.2f} kT)"
    with open(path) as stream:
        stored = json.load(stream)
    return stored["df_kT"], stored["command"] + f" (+- {stored['df_error_kT']:.2f} kT)"


def reference_name(system):
    """The ensemble a system's reference belongs to: ``ComparedSystem.reference``, else alanine_<solvent>."""
    return remd_traces.SYSTEMS[system].reference or ("alanine_vacuum" if "vacuum" in system else "alanine_implicit")


REFERENCE_SEED = 1000


def write_reference(system, seconds, traces, n_runs=1, first_core=0):
    """Independent long plain-PT runs by MBAR, combined by inverse variance.

    The runs (seeds 1000, 1001, ...) that have no trace yet run at once, one
    core each. Earlier references (``alanine_dipeptide_reference.py``, and
    this function before session 18) kept velocities unscaled at a swap,
    which heats the 300 K ensemble (docs/exactness.md, 'Velocities at a
    swap'), so they are no longer combined in.
    """
    seeds = [REFERENCE_SEED + i for i in range(n_runs)]
    missing = [seed for seed in seeds if not os.path.exists(trace_path(traces, system, "plain", seed))]
    if missing:
        run_all_at_once([("plain", seed) for seed in missing], system, seconds, traces, first_core)
    runs = []
    for seed in seeds:
        trace = dict(np.load(trace_path(traces, system, "plain", seed)))
        df, error = estimate_at(trace, np.inf, "mbar")
        runs.append({"seed": seed, "df_kT": df, "df_error_kT": error, "iterations": int(len(trace["wall_seconds"])),
                     "wall_seconds": float(trace["wall_seconds"][-1])})
    weights = np.array([run["df_error_kT"] for run in runs]) ** -2.0
    combined = float(np.dot(weights, [run["df_kT"] for run in runs]) / weights.sum())
    write_result(os.path.join(RESULTS, f"compare_reference_{reference_name(system)}.json"), {
        "system": system, "df_kT": combined, "df_error_kT": float(weights.sum() ** -0.5),
        "combined_from": f"inverse-variance mean of {len(runs)} independent plain runs",
        "estimator": "MBAR over every state, first 10 % dropped, thinned by the largest statistical inefficiency",
        "velocities_at_swaps": "rescaled (RescalingParallelTemperingSampler)", "runs": runs,
        "temperatures_kelvin": trace["temperatures_kelvin"].tolist()}, __file__)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=sorted(remd_traces.SYSTEMS), default="double_well")
    parser.add_argument("--minutes", type=float, default=20.0, help="wall-clock budget of each run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SECONDS} s per run, 3 seeds: about 5 minutes")
    parser.add_argument("--points", type=int, default=30, help="evaluation times per run")
    parser.add_argument("--traces", default=os.path.join(os.path.dirname(HERE), "compare_traces"))
    parser.add_argument("--analyze-only", action="store_true", help="analyse the traces already in --traces")
    parser.add_argument("--reference-df", type=float, help="kT; instead of the stored or exact reference")
    parser.add_argument("--reference", choices=sorted(remd_traces.SYSTEMS), help="write the reference from one plain run")
    parser.add_argument("--runs", type=int, default=1, help="with --reference: independent runs, at once, one core each")
    parser.add_argument("--all-at-once", action="store_true",
                        help="every seed's two samplers at the same time, one core each (a machine with 2 x seeds cores)")
    parser.add_argument("--first-core", type=int, default=0, help="with --all-at-once or --runs: the first core to use")
    parser.add_argument("--runs-only", action="store_true", help="write the traces, analyse later (--analyze-only)")
    parser.add_argument("--tag", default="", help="appended to the result's name, e.g. the machine")
    parser.add_argument("--one-core", action="store_true",
                        help="run the two samplers of a seed one after the other on one core (the other is busy)")
    parser.add_argument("--worker", choices=SAMPLERS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--core", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.makedirs(args.traces, exist_ok=True)
    if args.worker:
        return worker(args)
    if args.reference:
        return write_reference(args.reference, 60.0 * args.minutes, args.traces, args.runs, args.first_core)
    seconds = QUICK_SECONDS if args.quick else 60.0 * args.minutes
    seeds = list(range(args.seeds))
    start = time.perf_counter()
    if args.all_at_once and not args.analyze_only:
        print(f"seeds {seeds}: plain and augmented, {seconds:.0f} s each, all at once", flush=True)
        run_all_at_once([(kind, seed) for seed in seeds for kind in SAMPLERS], args.system, seconds, args.traces,
                        args.first_core)
    elif not args.analyze_only:
        for seed in seeds:
            print(f"seed {seed}: plain and augmented, {seconds:.0f} s each, " + ("in turn" if args.one_core else "at once"),
                  flush=True)
            run_pair(args.system, seed, seconds, args.traces, swap_cores=seed % 2 == 1, one_core=args.one_core)
    if args.runs_only:
        return
    reference, reference_source = ((args.reference_df, "--reference-df") if args.reference_df is not None
                                   else reference_df(args.system))
    result = analyse(args.system, seeds, args.traces, reference, args.points)
    result.update(reference_source=reference_source, seconds_per_run=seconds,
                  train_fraction=remd_traces.SYSTEMS[args.system].train_fraction,
                  cores=("one core, the samplers in turn" if args.one_core else
                         "one per run, every run at once" if args.all_at_once else "one per sampler, pinned"),
                  total_seconds=time.perf_counter() - start, command=command_line(__file__, argv))
    name = f"compare_{args.system}" + ("_quick" if args.quick else "") + (f"_{args.tag}" if args.tag else "")
    plot(result, os.path.join(RESULTS, name + ".png"))
    write_result(os.path.join(RESULTS, name + ".json"), json_safe(result), __file__, argv)
    print_table(result)


def print_table(result):
    print(f"\n{result['system']}: reference dF {result['reference_df_kT']:.3f} kT")
    print(f"{'sampler':<20} {'dF':>7} {'err':>6} {'spread':>7} {'t0.2 s':>8} {'t0.1 s':>8} {'eff':>9}")
    for name, s in result["samplers"].items():
        spread = s["seed_spread_kT"] if s["seed_spread_kT"] is not None else np.nan
        t2, t1 = (s[f"time_to_{b}kT_s"] for b in BANDS)
        print(f"{name:<20} {np.mean(s['df_kT_per_seed']):7.3f} {np.mean(s['df_error_kT_per_seed']):6.3f} {spread:7.3f} "
              f"{t2 if t2 is not None else float('nan'):8.0f} {t1 if t1 is not None else float('nan'):8.0f} "
              f"{s['mean_efficiency_per_kT2_s']:9.3g}")
    print(f"speedup to 0.2 kT (plain / augmented): {result['speedup_time_to_0.2kT']}; "
          f"efficiency ratio (augmented / plain): {result['efficiency_ratio']}")


if __name__ == "__main__":
    main()
