"""Where a study lives: SQLite by default, any SQLAlchemy URL, or Optuna's journal file; plus a cross-process lock.

The lock makes claiming a trial atomic across workers (count the study's trials, then create one), so that
`n_trials` is a global total: no worker starts a trial beyond it, and none is lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from alembert.errors import fail
from pipeline.sweep.settings import HeartbeatSettings

JOURNAL_PREFIX = "journal:"
SCHEMA_LOCK_NAME = "schema"  # a lock name no study is given: it guards creating the tables

def _retry_kwargs(max_retry: int) -> dict:
    """Optuna 4.9 renamed the retry callback and its argument; the old names warn and go away in Optuna 6."""
    new = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    if new is not None:
        return {"heartbeat_stale_trial_callback": new(max_retry=max_retry)}
    return {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=max_retry)}

Lock = Callable[[], contextlib.AbstractContextManager]


def storage_url(storage: str | None, out_dir: Path, study_name: str) -> str:
    """The configured URL, or the default SQLite file beside the trials (so the same command resumes)."""
    return storage or f"sqlite:///{(out_dir / f'{study_name}.db').resolve()}"


def shown(url: str) -> str:
    """The URL with any password hidden, for messages."""
    if url.startswith(JOURNAL_PREFIX):
        return url
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def _journal(url: str, heartbeat: HeartbeatSettings) -> BaseStorage:
    path = Path(url[len(JOURNAL_PREFIX):]).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as err:
        raise fail(f"cannot open the journal storage {path}: {err.strerror or err}", "give a writable file path: journal:/path/file.log") from None


def _dialect(url: str) -> str:
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).get_dialect().name
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ImportError) as err:
        raise fail(f"storage URL {shown(url)} is not usable: {_first_line(err)}",
                   "use sqlite:///path.db, postgresql+psycopg2://user@host:port/db (pip install psycopg2-binary), or journal:/path/file.log") from None


def _unreachable(url: str, err: BaseException):
    return fail(f"cannot reach the storage {shown(url)}: {_first_line(err)}",
                "start the database or fix the URL (nothing falls back to another storage)")


def _rdb(url: str, heartbeat: HeartbeatSettings) -> BaseStorage:
    import sqlalchemy

    dialect = _dialect(url)
    engine_kwargs = {"connect_args": {"timeout": 60}} if dialect == "sqlite" else {"pool_pre_ping": True}
    # Two workers started together on a fresh database would both create Optuna's schema and one would fail
    # (UNIQUE constraint on alembic_version), so creating the storage is serialised like claiming a trial.
    creating_lock = DIALECT_LOCKS.get(dialect, lambda url, name: contextlib.nullcontext)(url, SCHEMA_LOCK_NAME)
    try:
        with creating_lock():
            return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat.interval,
                              grace_period=heartbeat.grace_period, **_retry_kwargs(heartbeat.max_retry))
    except (sqlalchemy.exc.SQLAlchemyError, OSError) as err:
        raise _unreachable(url, err) from None


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip()
    return (text.splitlines() or [type(err).__name__])[0][:300]


def open_storage(url: str, heartbeat: HeartbeatSettings) -> BaseStorage:
    builder = _journal if url.startswith(JOURNAL_PREFIX) else _rdb
    return builder(url, heartbeat)


def supports_heartbeat(storage: BaseStorage) -> bool:
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


# ---- the claim lock, one kind per storage backend ----------------------------------------------------------

@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _advisory_lock(url: str, key: int, take: str, give: str) -> Lock:
    """A database-wide named lock (PostgreSQL advisory lock, MySQL GET_LOCK) on one connection kept for the worker."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.StaticPool)

    def connect():
        try:
            return engine.connect()
        except sqlalchemy.exc.SQLAlchemyError as err:
            raise _unreachable(url, err) from None

    @contextlib.contextmanager
    def lock() -> Iterator[None]:
        with connect() as connection:
            connection.execute(sqlalchemy.text(take), {"key": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text(give), {"key": key})
                connection.commit()

    return lock


def _sqlite_lock(url: str, study_name: str) -> Lock:
    import sqlalchemy

    database = sqlalchemy.engine.make_url(url).database
    if not database or database == ":memory:":
        return contextlib.nullcontext  # an in-memory database lives in this one process
    return lambda: _file_lock(Path(f"{database}.{study_name}.lock"))


DIALECT_LOCKS: dict[str, Callable[[str, str], Lock]] = {
    "sqlite": _sqlite_lock,
    "postgresql": lambda url, name: _advisory_lock(url, _lock_key(name), "SELECT pg_advisory_lock(:key)",
                                                   "SELECT pg_advisory_unlock(:key)"),
    "mysql": lambda url, name: _advisory_lock(url, _lock_key(name), "SELECT GET_LOCK(CAST(:key AS CHAR), -1)",
                                              "SELECT RELEASE_LOCK(CAST(:key AS CHAR))"),
}


def _lock_key(study_name: str) -> int:
    return zlib.crc32(f"alembert-sweep:{study_name}".encode())


def claim_lock(url: str, study_name: str) -> Lock:
    """The cross-process lock workers of this study take while they count trials and create one."""
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX):]).expanduser()
        return lambda: _file_lock(path.with_name(f"{path.name}.{study_name}.lock"))
    dialect = _dialect(url)
    if dialect not in DIALECT_LOCKS:
        raise fail(f"several workers cannot share a {dialect} storage safely here (no cross-process lock for it)",
                   f"use one of {', '.join(DIALECT_LOCKS)}, or journal:/path/file.log")
    return DIALECT_LOCKS[dialect](url, study_name)


def open_study(storage: BaseStorage, url: str, name: str, metrics: tuple[str, ...], directions: tuple[str, ...],
               sampler, pruner) -> optuna.Study:
    """Create the study or load it; an existing study with other objectives or directions is refused."""
    study = optuna.create_study(storage=storage, study_name=name, directions=list(directions), sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    found = tuple(d.name.lower() for d in study.directions)
    names = tuple(study.metric_names or ())
    if found != tuple(directions) or (names and names != tuple(metrics)):
        raise fail(f"study '{name}' in {shown(url)} already exists with objectives "
                   f"{', '.join(f'{m} ({d})' for m, d in zip(names or ('?',) * len(found), found))}, "
                   f"not {', '.join(f'{m} ({d})' for m, d in zip(metrics, directions))}",
                   "give this sweep another study_name=..., or use the objectives that study was made with")
    if not names:
        study.set_metric_names(list(metrics))
    return study
