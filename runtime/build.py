"""Build the alembert-runtime wheel: the files runtime/files.txt lists, with runtime/pyproject.toml, and nothing else.

    python runtime/build.py [--out dist]

The files are staged in a temporary directory (setuptools packages whole directories, and the runtime is a
few modules of two of them); the wheel lands in --out and its path is printed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def runtime_files() -> list[str]:
    lines = (HERE / "files.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def build(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        stage = Path(staging)
        for relative in runtime_files():
            (stage / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / relative, stage / relative)
        shutil.copyfile(HERE / "pyproject.toml", stage / "pyproject.toml")
        before = set(out.glob("alembert_runtime-*.whl"))
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                        str(stage)], check=True)
    built = sorted(set(out.glob("alembert_runtime-*.whl")) - before) or sorted(out.glob("alembert_runtime-*.whl"))
    return built[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where the wheel goes (default: dist/)")
    print(build(parser.parse_args().out))


if __name__ == "__main__":
    main()
