"""What every benchmark result records about where it came from: command, commit, machine, date.

``stamp(result)`` fills in what a result dict lacks; benchmark scripts call
it right before writing their JSON into ``benchmarks/results/``.
"""
import datetime
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def current_commit():
    """The checkout's commit hash, with '-dirty' when tracked files have uncommitted changes."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "HEAD") or "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def command_line(script, argv=None):
    """``python <script relative to the repository> <arguments>``."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    return "python " + " ".join([os.path.relpath(os.path.abspath(script), os.path.dirname(HERE))] + arguments)


def machine_description():
    """CPU architecture and core count, and the GPU where torch sees one."""
    description = f"{platform.machine()}, {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            description += f", {torch.cuda.get_device_name()}"
    except ImportError:
        pass
    return description


def stamp(result, script=None, argv=None):
    """Add ``command``, ``commit``, ``machine``, ``date`` and ``package_version`` where ``result`` lacks them."""
    from openmm_ddpm import __version__

    if "command" not in result and script is not None:
        result["command"] = command_line(script, argv)
    result.setdefault("commit", current_commit())
    result.setdefault("machine", machine_description())
    result.setdefault("date", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    result.setdefault("package_version", __version__)
    return result


def write_result(path, result, script=None, argv=None):
    """Stamp ``result`` (``stamp``), write it as JSON to ``path`` and say so."""
    import json

    with open(path, "w") as stream:
        json.dump(stamp(result, script, argv), stream, indent=2)
    print(f"wrote {path}")
