"""One error type for every bad input, and the CLI wrapper that prints it as a single line.

Kept free of torch imports so that the torch-free ONNX runtime can share it.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import socket
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


# Optional dependencies and the extra that installs each (pyproject.toml's [project.optional-dependencies]).
OPTIONAL_MODULES = {"psycopg2": "postgres", "tensorboard": "tensorboard"}
# OS errors a user's environment causes, and what to do about each; any other OSError is a bug and shows a traceback.
DISK_ERRORS = {errno.ENOSPC: "free some space there, or write elsewhere (e.g. hydra.run.dir=/bigger/disk/run)",
               errno.EDQUOT: "free some of your quota, or write elsewhere (e.g. hydra.run.dir=/bigger/disk/run)",
               errno.EROFS: "write to a writable directory (e.g. hydra.run.dir=/writable/run)",
               errno.EACCES: "write to a directory you own, or fix its permissions"}


def user_error(err: BaseException) -> AlembertError | None:
    """The one-line AlembertError for an exception a user's input or machine caused; None for a bug."""
    if isinstance(err, AlembertError):
        return err
    if isinstance(err, ModuleNotFoundError) and err.name:
        top = err.name.split(".")[0]
        if top in OPTIONAL_MODULES:
            return fail(f"the optional dependency '{top}' is not installed",
                        f"pip install 'alembert[{OPTIONAL_MODULES[top]}]' (or pip install -e '.[{OPTIONAL_MODULES[top]}]' in a clone)")
        return fail(f"the module '{top}' that alembert needs is missing", "reinstall: pip install torch==2.13.0 && pip install -e .")
    if isinstance(err, OSError) and err.errno in DISK_ERRORS:
        where = err.filename or "the output directory"
        return fail(f"cannot write {where}: {os.strerror(err.errno)}", DISK_ERRORS[err.errno])
    return None


def run_cli(main: Callable[[], object], cleanup: Callable[[], None] | None = None) -> None:
    """Run a command-line entry point: a user's error becomes one line on stderr and exit code 2.

    User errors are AlembertError, a missing optional dependency and a full, read-only or forbidden disk.
    `cleanup` removes partial output (for example Hydra's run directory) when the run fails.
    Set ALEMBERT_DEBUG=1 to see the full traceback instead.
    """
    try:
        main()
    except (AlembertError, ModuleNotFoundError, OSError) as err:
        problem = user_error(err)
        if problem is None:
            raise
        if cleanup is not None:
            cleanup()
        if debug_enabled():
            raise
        print(f"alembert: error: {problem}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        if cleanup is not None:
            cleanup()
        print("alembert: interrupted", file=sys.stderr)
        sys.exit(130)


def run_app(app: Callable[[], object]) -> None:
    """Run a Hydra app so that Hydra's own errors (a misspelt override key, an unknown config group option, a
    value that does not parse) are one line and exit code 2 too, not Hydra's multi-line report and exit 1.

    Errors inside the job go through `run_cli` in the app. Hydra is recognised by the exception's module, so
    that this torch- and Hydra-free module need not import it.
    """
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra then raises its error instead of printing a report
    try:
        app()
    except Exception as err:
        if type(err).__module__.split(".")[0] not in ("hydra", "omegaconf") or debug_enabled():
            raise
        print(f"alembert: error: {_hydra_problem(err)}; check the key and value against the shipped config "
              f"(alembert/conf/; --cfg job prints the composed config, --help lists the options)", file=sys.stderr)
        sys.exit(2)


def _hydra_problem(err: Exception) -> str:
    """Hydra's message on one line, without its advice to append keys with '+' (from_dict refuses unknown keys)."""
    text = f"{err}\n{err.__cause__}" if err.__cause__ is not None else str(err)  # the cause says which key
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    kept = [line for line in lines if not line.startswith(("To append", "full_key", "object_type", "reference_type", "Config search path", "provider="))]
    return " ".join(kept) or type(err).__name__


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `final`; rename it to `final` only if the block succeeds.

    A failed or interrupted write leaves nothing at `final` (and no temporary directory either).
    An existing `final` is replaced.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}-", dir=final.parent))
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


def remove_stale_temporaries(final: Path) -> None:
    """Delete what killed writers of `final` on this host left behind (.<name>.tmp-<host>-<pid>-*, that pid gone).

    Only this host's are judged: a pid says nothing about a process on another machine sharing the disk.
    """
    prefix = f".{final.name}.tmp-{socket.gethostname()}-"
    for stale in final.parent.glob(f"{glob.escape(prefix)}*"):
        pid = stale.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def ensure_space(directory: str | os.PathLike, needed: int, what: str) -> None:
    """Fail before writing `what` (about `needed` bytes) into `directory` when its disk cannot hold it."""
    existing = Path(directory).resolve()
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise fail(f"not enough disk space in {directory} for {what}: {needed:,} bytes needed, {free:,} free",
                   DISK_ERRORS[errno.ENOSPC])


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
