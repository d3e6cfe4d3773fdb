"""Kill-and-resume harness: SIGKILL a run at random moments of chosen stages, resume it each time, check what survived.

The run is ``openmm-ddpm run`` under ``tests/scripts/instrumented_run.py``,
which appends stage markers to a file without buffering, so after each kill
the last open stage says where the kill landed. Each kill targets a stage
(MD, training, proposals, storage write, model checkpoint write, storage
snapshot), lets a random number of its occurrences pass (so the kills spread
over the run and the run advances), waits a random fraction of a
millisecond-scale delay into it, and sends SIGKILL. The next process resumes
the same directory; its first marker says from which iteration the storage
and the model checkpoint came back, and whether every replica's velocities
did.
"""
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts", "instrumented_run.py")
STAGES = ("md", "training", "proposals", "storage", "checkpoint", "snapshot")
ONCE_PER_CHECKPOINT = ("checkpoint", "snapshot")
DELAY_SECONDS = {"md": 0.004, "training": 0.004, "proposals": 0.004, "storage": 0.002, "checkpoint": 0.001,
                 "snapshot": 0.001}


@dataclass
class Kill:
    """One kill: the ``target`` stage, where it ``landed`` (innermost open stage, or 'between'), the ``iteration``
    in progress, and what the next process resumed: storage iteration, model checkpoint iteration, velocities."""

    target: str
    landed: str
    iteration: int
    resumed_from: int = -1
    learner_from: int = -1
    velocities_ok: bool = False


def read_markers(path, offset=0):
    """Marker lines from byte ``offset`` on, and the new offset."""
    if not os.path.exists(path):
        return [], offset
    with open(path, "rb") as stream:
        stream.seek(offset)
        data = stream.read()
    complete = data[: data.rfind(b"\n") + 1]
    return complete.decode().splitlines(), offset + len(complete)


def landing(lines):
    """(innermost open stage or 'between', iteration) at the end of a killed process's marker lines."""
    stack, iteration = [], 0
    for line in lines:
        words = line.split()
        if words[0] == "enter":
            stack.append(words[1])
            iteration = int(words[2])
        elif words[0] == "exit" and stack:
            stack.pop()
    return (stack[-1] if stack else "between"), iteration


def _start(markers, config, out):
    return subprocess.Popen([sys.executable, SCRIPT, markers, config, out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_and_resume(config, out, n_kills, checkpoint_interval, seed=0, timeout=600.0):
    """Run ``config`` into ``out``, killing it ``n_kills`` times; returns the kills and the final process's markers.

    Parameters
    ----------
    config : str
        YAML of ``openmm-ddpm run``; it must last long enough for the kills (``iterations``).
    out : str
        The run directory.
    n_kills : int
    checkpoint_interval : int
        The config's, to spread the kills over the run.
    seed : int
        Seeds the targets, skips and delays (the wall-clock moments still vary).
    """
    rng = np.random.default_rng(seed)
    targets = [STAGES[k % len(STAGES)] for k in range(n_kills)]
    rng.shuffle(targets)
    markers, offset, kills = os.path.join(os.path.dirname(os.path.abspath(out)), "markers.txt"), 0, []
    deadline = time.time() + timeout
    for target in targets:
        process = _start(markers, config, out)
        period = 1 if target in ONCE_PER_CHECKPOINT else checkpoint_interval
        skip, seen, segment = int(rng.integers(0, 2 * period)) if period > 1 else int(rng.integers(0, 2)), 0, []
        delay = rng.uniform(0.0, DELAY_SECONDS[target])
        while process.poll() is None and time.time() < deadline:
            lines, offset = read_markers(markers, offset)
            segment += lines
            if kills and not any(line.startswith("resumed") for line in segment):
                time.sleep(0.0005)
                continue
            seen += sum(line.startswith(f"enter {target} ") for line in lines)
            if seen > skip:
                time.sleep(delay)
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.0005)
        process.wait()
        lines, offset = read_markers(markers, offset)
        segment += lines
        if kills:
            _record_resume(kills[-1], segment)
        if process.returncode != -signal.SIGKILL:
            raise AssertionError(f"the run ended (status {process.returncode}) before kill {len(kills) + 1}: "
                                 "give it more iterations")
        kills.append(Kill(target, *landing(segment)))
    final = _start(markers, config, out)
    final.wait(timeout=max(deadline - time.time(), 1.0))
    lines, offset = read_markers(markers, offset)
    _record_resume(kills[-1], lines)
    assert final.returncode == 0 and lines[-1] == "done 0", lines[-5:]
    return kills, lines


def _record_resume(kill, lines):
    resumed = [line.split() for line in lines if line.startswith("resumed")]
    if resumed:
        kill.resumed_from, kill.learner_from, kill.velocities_ok = int(resumed[0][1]), int(resumed[0][2]), resumed[0][3] == "1"
