"""docs/configuration.md, generated from the settings layer: every key of a run's YAML, its default and what it does.

python -m openmm_ddpm.app.config_reference            (rewrites docs/configuration.md)
python -m openmm_ddpm.app.config_reference --check    (exit 1 if it is out of date; a test runs this)
"""
import argparse
import dataclasses
import os
import re
import sys

import yaml

from openmm_ddpm.app.config import BUILTINS, PLATFORMS, default_config
from openmm_ddpm.settings import GROUPS, LEGACY_FIELDS, Settings

DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "configuration.md")
TOP_LEVEL = [  # (key, what it is) of the run's YAML besides settings
    ("system", "where the System comes from: `builtin` (" + ", ".join(BUILTINS) + "), `pdb` + `forcefield` (a list "
     "of OpenMM force-field XMLs, e.g. amber14-all.xml, implicit/obc2.xml), `prmtop` + `inpcrd` (Amber), or `xml` "
     "(a serialized openmm.System) + `pdb` (its structure); `constraints`: none or hbonds (not with xml, whose System "
     "carries its own). Relative paths are read from the YAML's folder."),
    ("temperatures", "the ladder, ascending, the first the target state: a list such as `[300 K, 350 K]`, or "
     "`{min: 300 K, max: 1000 K, n: 6}` (geometric). Every temperature needs its unit."),
    ("iterations", "replica-exchange iterations; a larger value on an existing run directory extends it"),
    ("platform", "OpenMM platform: " + ", ".join(PLATFORMS) + " ('auto': Reference for a small molecule in vacuum, "
     "else CUDA, OpenCL or CPU, the first available)"),
    ("checkpoint_interval", "iterations between storage checkpoints (and model checkpoints beside them); a run "
     "resumes from the last one"),
]


def attribute_docs(cls):
    """{field name: its description} from the numpydoc ``Attributes`` section of a settings dataclass."""
    text = (cls.__doc__ or "").split("Attributes\n    ----------\n", 1)
    if len(text) < 2:
        return {}
    docs, names, lines = {}, [], []
    for line in text[1].splitlines():
        header = re.match(r"    ([a-z_, ]+) : ", line)
        if header:
            for name in names:
                docs[name] = " ".join(lines)
            names, lines = [n.strip() for n in header.group(1).split(",")], []
        elif line.startswith("        "):
            lines.append(line.strip())
    for name in names:
        docs[name] = " ".join(lines)
    return docs


def _value(value):
    return "`" + yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip() + "`"


def reference_markdown():
    """The whole page."""
    built_in = default_config()
    lines = ["# Configuration reference", "",
             "Generated from the settings layer by `python -m openmm_ddpm.app.config_reference`; do not edit by hand.",
             "A run's YAML (`openmm-ddpm run CONFIG.yaml`) has the keys below; any left out keep the built-in run's "
             "value, and an unknown key is refused in one line that names it. Quantities are strings with their "
             "unit, e.g. `2.0 * femtosecond` or `300 K`.", "", "## The run", "", "| key | built-in run | what it is |",
             "|---|---|---|"]
    built_in_values = built_in.to_dict()
    for key, text in TOP_LEVEL:
        value = built_in_values[key]
        shown = _value(value) if key != "temperatures" else "`{min: 300 K, max: 1000 K, n: 6}`"
        lines.append(f"| `{key}` | {shown} | {text} |")
    lines += ["", "## settings", "",
              "`settings:` holds any subset of the groups below (`openmm_ddpm.settings`), and `freeze_after` and "
              "`seed`. 'Default' is the settings layer's own default, which the Python samplers use; 'built-in "
              "run' is what `openmm-ddpm run` uses without a config.", ""]
    settings_docs = attribute_docs(Settings)
    for name in ("freeze_after", "seed"):
        lines.append(f"- `{name}` (default {_value(getattr(Settings(), name))}, built-in run "
                     f"{_value(getattr(built_in.settings, name))}): {settings_docs.get(name, '')}")
    for group, cls in GROUPS.items():
        docs, default, used = attribute_docs(cls), cls(), getattr(built_in.settings, group)
        lines += ["", f"### `{group}` ({cls.__name__})", "", (cls.__doc__ or "").strip().splitlines()[0], "",
                  "| key | default | built-in run | what it does |", "|---|---|---|---|"]
        for field in dataclasses.fields(cls):
            if field.name in LEGACY_FIELDS.get(cls.__name__, ()):
                continue
            plain_default, plain_used = (default.to_dict()[field.name], used.to_dict()[field.name])
            lines.append(f"| `{field.name}` | {_value(plain_default)} | {_value(plain_used)} | "
                         f"{docs.get(field.name, '').replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is out of date")
    args = parser.parse_args(argv)
    text = reference_markdown()
    if args.check:
        with open(DOCS) as stream:
            current = stream.read()
        if current != text:
            print("docs/configuration.md is out of date: run python -m openmm_ddpm.app.config_reference", file=sys.stderr)
            return 1
        return 0
    with open(DOCS, "w") as stream:
        stream.write(text)
    print(f"wrote {os.path.normpath(DOCS)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
