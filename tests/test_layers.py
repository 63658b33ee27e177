"""The layers run one way: base (alembert) <- stages (distill, compress, export) <- pipeline <- entry points.

Walks every module's imports with `ast`. A stage never imports another stage or the pipeline, the base
never imports a stage, and module-level imports form no cycle. Entry points (`__main__.py` files and the
benchmarks) sit on top and may wire stages together.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE, STAGES, PIPELINE = "alembert", ("distill", "compress", "export"), "pipeline"
PACKAGES = (BASE, *STAGES, PIPELINE, "benchmarks")
RUNTIME_FILES = tuple(line for line in (ROOT / "runtime" / "files.txt").read_text().splitlines()
                      if line and not line.startswith("#"))  # the device's copy and the alembert-runtime wheel
TORCH_FREE = (*RUNTIME_FILES, "alembert/cli.py", "alembert/hardware.py")


@functools.cache
def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Modules `path` imports; `from pkg import mod` counts as pkg.mod alone when pkg.mod is a module of ours."""
    known = modules()
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & set(known)
            names.update(submodules or {node.module})
    return names


def ours(names: set[str], known: dict[str, Path]) -> set[str]:
    return {name for name in names if name in known}


def is_entry_point(name: str) -> bool:
    return name.endswith("__main__") or name.startswith("benchmarks")


def allowed(importer: str, imported: str) -> bool:
    source, target = importer.split(".")[0], imported.split(".")[0]
    if is_entry_point(importer) or source == target or target == BASE:
        return True
    return source == PIPELINE and target in STAGES


def test_no_import_crosses_a_layer_the_wrong_way():
    known = modules()
    wrong = sorted(f"{name} imports {target}" for name, path in known.items() for target in ours(imports(path), known)
                   if not allowed(name, target))
    assert wrong == []


def test_module_level_imports_have_no_cycle():
    known = modules()
    graph = {name: ours(imports(path, top_level_only=True), known) - {name} for name, path in known.items()}
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(target):] + [name, target]))
            if target not in state:
                visit(target, trail + [name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


@pytest.mark.parametrize("relative", TORCH_FREE)
def test_the_device_runtime_imports_no_torch_and_nothing_beyond_the_base(relative):
    known = modules()
    names = imports(ROOT / relative)
    assert not {name for name in names if name.split(".")[0] in ("torch", "transformers", "hydra", "omegaconf")}
    assert {target.split(".")[0] for target in ours(names, known)} <= {"alembert", "export"}


def test_the_runtime_files_import_nothing_of_ours_beyond_their_own_list():
    listed = {".".join(Path(relative).with_suffix("").parts).removesuffix(".__init__") for relative in RUNTIME_FILES}
    for relative in RUNTIME_FILES:
        assert set(ours(imports(ROOT / relative), modules())) <= listed, relative


def test_only_main_modules_import_hydra_or_omegaconf():
    offenders = sorted(name for name, path in modules().items() if not name.endswith("__main__")
                       and any(module.split(".")[0] in ("hydra", "omegaconf") for module in imports(path)))
    assert offenders == []


def test_no_module_is_over_400_lines():
    long = sorted(f"{name} ({len(path.read_text().splitlines())} lines)" for name, path in modules().items()
                  if len(path.read_text().splitlines()) > 400)
    assert long == []
