"""One error type for every bad input, and the CLI wrapper that prints it as a single line.

Kept free of torch imports so that the torch-free ONNX runtime can share it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


class AlembertError(Exception):
    """A problem with the user's input: the message names the problem and the fix."""


def fail(problem: str, fix: str) -> AlembertError:
    """Build an error whose one line says what is wrong and what to do instead."""
    return AlembertError(f"{problem}; {fix}")


def debug_enabled() -> bool:
    return os.environ.get("ALEMBERT_DEBUG", "") not in ("", "0")


def run_cli(main: Callable[[], object], cleanup: Callable[[], None] | None = None) -> None:
    """Run a command-line entry point: an AlembertError becomes one line on stderr and exit code 2.

    `cleanup` removes partial output (for example Hydra's run directory) when the run fails.
    Set ALEMBERT_DEBUG=1 to see the full traceback instead.
    """
    try:
        main()
    except AlembertError as err:
        if cleanup is not None:
            cleanup()
        if debug_enabled():
            raise
        print(f"alembert: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if cleanup is not None:
            cleanup()
        print("alembert: interrupted", file=sys.stderr)
        sys.exit(130)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `final`; rename it to `final` only if the block succeeds.

    A failed or interrupted write leaves nothing at `final` (and no temporary directory either).
    An existing `final` is replaced.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file through a temporary file and a rename, so readers never see half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
