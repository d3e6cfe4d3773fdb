"""The package's folder tree reads like the design: who may import whom, and the openmmtools hooks it relies on."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "openmm_ddpm"
ALWAYS = ("openmm_ddpm._version",)
ALLOWED = {  # a module of the key may import these parts of the package (besides itself), lazily or not
    "openmm_ddpm.settings": (),
    "openmm_ddpm.units": (),
    "openmm_ddpm.seeding": (),
    "openmm_ddpm.testsystems": ("openmm_ddpm.units",),
    "openmm_ddpm.coordinates": (),
    "openmm_ddpm.model": ("openmm_ddpm.settings", "openmm_ddpm.units", "openmm_ddpm.coordinates"),
    "openmm_ddpm.moves": ("openmm_ddpm.model", "openmm_ddpm.coordinates", "openmm_ddpm.units", "openmm_ddpm.settings"),
    "openmm_ddpm.multistate": ("openmm_ddpm.model", "openmm_ddpm.coordinates", "openmm_ddpm.moves", "openmm_ddpm.settings",
                               "openmm_ddpm.seeding", "openmm_ddpm.units"),
    "openmm_ddpm.analysis": ("openmm_ddpm.model", "openmm_ddpm.moves", "openmm_ddpm.multistate.storage", "openmm_ddpm.units"),
}


def package_imports(path):
    """Every ``openmm_ddpm...`` module a source file imports, at any depth of the file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("openmm_ddpm"):
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("openmm_ddpm"))


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def owner(name):
    """The ALLOWED key a module belongs to (None: the application and the package root, free to import anything)."""
    return next((key for key in ALLOWED if name == key or name.startswith(key + ".")), None)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layout(path):
    key = owner(module_name(path))
    if key is None:
        return
    for imported in package_imports(path):
        allowed = (key,) + ALLOWED[key] + ALWAYS
        assert any(imported == a or imported.startswith(a + ".") for a in allowed), \
            f"{module_name(path)} imports {imported}; {key} may import only {allowed}"


def test_the_library_never_imports_the_application():
    for path in PACKAGE.rglob("*.py"):
        if module_name(path).startswith("openmm_ddpm.app") or module_name(path) == "openmm_ddpm":
            continue
        assert not [m for m in package_imports(path) if m.startswith("openmm_ddpm.app")], path


def test_the_layout_test_can_fail(tmp_path):
    """Negative control: a coordinates module importing the samplers is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from openmm_ddpm.multistate.samplers import DDPMParallelTemperingSampler\n")
    imported = list(package_imports(bad))
    assert imported == ["openmm_ddpm.multistate.samplers"]
    assert not any(imported[0].startswith(a) for a in ("openmm_ddpm.coordinates",) + ALLOWED["openmm_ddpm.coordinates"])


def test_openmmtools_hooks_the_samplers_override_exist():
    """The samplers extend these methods of openmmtools (0.27), each calling the parent's body; an openmmtools
    that renames one must fail here, not silently bypass the learner."""
    from openmmtools.multistate import MultiStateSampler, ParallelTemperingSampler, ReplicaExchangeSampler

    from openmm_ddpm.multistate.persistence import PersistenceMixin
    from openmm_ddpm.multistate.samplers import DDPMSamplerMixin

    for hook in ("_propagate_replicas", "_propagate_replica", "_mix_replicas", "_report_iteration_items",
                 "_report_iteration", "_restore_sampler_from_reporter", "_instantiate_sampler_from_reporter",
                 "from_storage", "_pre_write_create"):
        assert hook in vars(DDPMSamplerMixin) or hook in vars(PersistenceMixin)
        for parent in (MultiStateSampler, ParallelTemperingSampler, ReplicaExchangeSampler):
            assert callable(getattr(parent, hook, None)), (parent.__name__, hook)


def test_public_api():
    import openmm_ddpm

    for name in openmm_ddpm.__all__:
        assert getattr(openmm_ddpm, name) is not None
    assert {"DDPMParallelTemperingSampler", "DDPMReplicaExchangeSampler", "GenerativeProposal", "InternalCoordinates",
            "ProposalModel", "Settings", "load_run"} <= set(openmm_ddpm.__all__)
