"""Atomic writes: a killed writer's temporary directory is removed by the next write, nobody else's is."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from alembert.errors import atomic_dir


def test_the_next_write_removes_only_temporaries_of_dead_writers_on_this_host(tmp_path):
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its pid is now free: a writer killed with SIGKILL looks like this
    host = socket.gethostname()
    dead = tmp_path / f".out.tmp-{host}-{finished.pid}-abc"
    alive = tmp_path / f".out.tmp-{host}-{os.getpid()}-xyz"
    elsewhere = tmp_path / ".out.tmp-another-host-1-q"
    for directory in (dead, alive, elsewhere):
        directory.mkdir()
    with atomic_dir(tmp_path / "out") as staging:
        (staging / "file").write_text("complete")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, elsewhere.name, "out"])
    assert (tmp_path / "out" / "file").read_text() == "complete"


def test_a_failed_write_leaves_neither_the_target_nor_a_temporary(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "out") as staging:
            (staging / "half").write_text("x")
            raise RuntimeError("disk vanished")
    assert list(tmp_path.iterdir()) == []
