"""The alembert-runtime wheel (python runtime/build.py): built from runtime/files.txt alone, installed into a venv that
has no torch, and its alembert-predict answers on a bundle.

The venv is made without the system site-packages; onnxruntime, tokenizers, numpy and what they require are linked
into it from this interpreter (offline, and torch is not among them: the test checks), so the wheel's own
dependency metadata is what pip checks.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from export.bundle import build_bundle
from export.config import ExportConfig, LatencyConfig, ParityConfig
from test_export import LABELS

REPO = Path(__file__).resolve().parents[1]
RUNTIME_DEPENDENCIES = ("onnxruntime", "tokenizers", "numpy")


def installed_closure(names) -> dict[str, metadata.Distribution]:
    """The installed distributions `names` need at run time, transitively (extras and unmet markers skipped)."""
    found: dict[str, metadata.Distribution] = {}
    pending = list(names)
    while pending:
        name = re.split(r"[\s;<>=!~\[(]", pending.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in found:
            continue
        try:
            found[name] = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional requirement this interpreter does not have
        for requirement in found[name].requires or ():
            if "extra ==" not in requirement and _marker_holds(requirement):
                pending.append(requirement)
    return found


def _marker_holds(requirement: str) -> bool:
    from packaging.requirements import Requirement

    marker = Requirement(requirement).marker
    return marker is None or marker.evaluate()


def link_into(site: Path, distributions) -> None:
    """Symlink each distribution's top-level entries (packages, modules, .libs, dist-info) into `site`."""
    for distribution in distributions:
        root = Path(distribution.locate_file(""))
        for top in {Path(str(file)).parts[0] for file in distribution.files or ()}:
            source, target = root / top, site / top
            if source.exists() and not target.exists() and top not in ("..", "bin"):
                target.symlink_to(source)


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("runtime-wheel")
    built = subprocess.run([sys.executable, str(REPO / "runtime" / "build.py"), "--out", str(work / "dist")],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = Path(built.stdout.strip().splitlines()[-1])
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True, timeout=300)
    python = work / "venv" / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    closure = installed_closure(RUNTIME_DEPENDENCIES)
    assert "torch" not in closure and "transformers" not in closure, sorted(closure)
    link_into(site, closure.values())
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", str(wheel)],
                               capture_output=True, text=True, timeout=300)  # with its dependencies: all present, none fetched
    assert installed.returncode == 0, installed.stderr[-2000:]
    return work / "venv"


def test_the_wheel_holds_exactly_the_listed_files(runtime_venv):
    listed = [line for line in (REPO / "runtime" / "files.txt").read_text().splitlines() if line and not line.startswith("#")]
    [wheel] = (runtime_venv.parent / "dist").glob("alembert_runtime-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        sources = sorted(name for name in archive.namelist() if not name.split("/")[0].endswith(".dist-info"))
    assert sources == sorted(listed)


def test_the_installed_runtime_predicts_in_a_venv_without_torch(runtime_venv, tiny_dir, tmp_path):
    bundle = build_bundle(ExportConfig(model=str(tiny_dir("bert", layers=2)), out=str(tmp_path / "bundle"), variants=(),
                                       max_length=32, parity=ParityConfig(batch_sizes=(1,), max_lengths=(8,), samples=4),
                                       latency=LatencyConfig(runs=2, warmup=1, seq_len=8)))
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    python = runtime_venv / "bin" / "python"
    no_torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    result = subprocess.run([str(runtime_venv / "bin" / "alembert-predict"), str(bundle), "a wonderful film"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["label"] in LABELS
    where = subprocess.run([str(python), "-c", "import export.runtime; print(export.runtime.__file__)"], capture_output=True,
                           text=True, env=env, cwd=tmp_path, check=True).stdout
    assert str(runtime_venv) in where  # the wheel's copy, not the clone's
