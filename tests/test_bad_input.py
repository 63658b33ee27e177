"""The bad-input battery: every mistake a user can make through the CLIs, with tiny models.

Each row is one CLI invocation. It must exit with code 2, print exactly one `alembert: error:` line that
names the problem, print no traceback, and leave no new file or directory behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

ROOT = Path(__file__).resolve().parents[1]
DEMO = ["data.demo.train_size=32", "data.demo.dev_size=8", "data.demo.test_size=8", "data.max_length=16"]
QUICK = ["student.num_layers=1", "baseline=false", "train.epochs=1", "train.batch_size=16", "latency_seq_len=8"]


@dataclass
class Workspace:
    """A temporary folder with the tiny teacher; rows write their bad files here before the snapshot."""

    root: Path
    teacher: Path

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    def teacher_copy(self, name: str) -> Path:
        """A copy of the teacher directory, to corrupt one of its files."""
        target = self.root / name
        target.mkdir()
        for source in self.teacher.iterdir():
            if source.is_file():
                (target / source.name).write_bytes(source.read_bytes())
        return target

    def distill(self, *overrides: str) -> list[str]:
        return ["-m", "distill", f"teacher={self.teacher}", "finetune.mode=never", f"finetune.cache_dir={self.root}/cache",
                *DEMO, *QUICK, f"hydra.run.dir={self.root}/run", *overrides]

    def files_task(self, train: Path, *overrides: str) -> list[str]:
        return self.distill("data.task=files", f"data.train={train}", *overrides)


def truncated_weights(w: Workspace) -> list[str]:
    teacher = w.teacher_copy("truncated")
    weights = teacher / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return w.distill(f"teacher={teacher}")


def corrupt_config(w: Workspace) -> list[str]:
    teacher = w.teacher_copy("badconfig")
    (teacher / "config.json").write_text("{not json")
    return w.distill(f"teacher={teacher}")


def corrupt_tokenizer(w: Workspace) -> list[str]:
    teacher = w.teacher_copy("badtok")
    (teacher / "tokenizer.json").write_text('{"version": "1.0", "model": 7}')
    return w.distill(f"teacher={teacher}")


def gpt2_teacher(w: Workspace) -> list[str]:
    directory = w.root / "gpt2"
    tokenizer = AutoTokenizer.from_pretrained(w.teacher)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=64, num_labels=2,
                        pad_token_id=0)
    GPT2ForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return w.distill(f"teacher={directory}")


def tsv(w: Workspace, name: str, body: str) -> Path:
    return w.file(name, "sentence\tlabel\n" + body)


GOOD_ROWS = "a fine film\tpos\na dull film\tneg\n"


def incompatible_resume(w: Workspace) -> list[str]:
    """A finished run with checkpoints, resumed with another batch size."""
    first = [sys.executable, *w.distill("train.checkpoint_every=1")]
    subprocess.run(first, cwd=w.root, env=cli_env(), capture_output=True, check=True, timeout=300)
    return w.distill("train.checkpoint_every=1", "train.resume=true", "train.batch_size=8")


def sweep_file(w: Workspace, text: str) -> list[str]:
    return ["-m", "distill.sweep", f"sweep={w.file('sweep.yaml', text)}", f"out_dir={w.root}/sweeps"]


def without_psycopg2(w: Workspace) -> list[str]:
    """The sweep on PostgreSQL where the [postgres] extra is not installed (the module import is blocked)."""
    script = ("import runpy, sys; sys.modules['psycopg2'] = None; "
              f"sys.argv = ['distill.sweep', 'sweep=demo', 'storage=postgresql+psycopg2://u:p@127.0.0.1:1/db', "
              f"'out_dir={w.root}/sweeps', 'teacher={w.teacher}']; runpy.run_module('distill.sweep', run_name='__main__')")
    return ["-c", script]


def bundle(w: Workspace, manifest: str) -> list[str]:
    directory = w.root / "bundle"
    directory.mkdir()
    (directory / "manifest.json").write_text(manifest)
    return ["-m", "export.predict", str(directory), "a fine film"]


# id -> (the invocation, a fragment the error line must contain)
ROWS = {
    "teacher path missing": (lambda w: w.distill(f"teacher={w.root}/nope"), "does not exist"),
    "teacher with a truncated model.safetensors": (truncated_weights, "could not load the model"),
    "teacher with a corrupt config.json": (corrupt_config, "could not load the model"),
    "teacher with a corrupt tokenizer.json": (corrupt_tokenizer, "could not load the model"),
    "GPT-2 (decoder-only) teacher": (gpt2_teacher, "'gpt2' model, which alembert does not support"),
    "data file missing": (lambda w: w.files_task(w.root / "none.tsv"), "does not exist"),
    "wrong column": (lambda w: w.files_task(w.file("cols.tsv", "text\tlabel\na\tpos\n")), "no column sentence"),
    "TSV row of one field": (lambda w: w.files_task(tsv(w, "one.tsv", GOOD_ROWS + "lonely\n")), "line 4"),
    "TSV row of three fields": (lambda w: w.files_task(tsv(w, "three.tsv", GOOD_ROWS + "a\tpos\textra\n")), "line 4"),
    "latin-1 bytes in a UTF-8 file": (lambda w: w.files_task(w.file("latin.tsv", "sentence\tlabel\ncaf\xe9\tpos\n".encode("latin-1"))),
                                      "data.encoding"),
    "label unseen in train": (lambda w: w.files_task(tsv(w, "train.tsv", GOOD_ROWS), f"data.dev={tsv(w, 'dev.tsv', 'meh film' + chr(9) + 'mixed' + chr(10))}"),
                              "not one of the training labels"),
    "empty data file": (lambda w: w.files_task(w.file("empty.tsv", "")), "no rows"),
    "data.max_length=0": (lambda w: w.distill("data.max_length=0"), "data.max_length=0"),
    "train.epochs=-1": (lambda w: w.distill("train.epochs=-1"), "train.epochs=-1"),
    "train.epochs=abc": (lambda w: w.distill("train.epochs=abc"), "train.epochs='abc' is not a whole number"),
    "negative learning rate": (lambda w: w.distill("train.lr=-0.001"), "train.lr=-0.001"),
    "kd.alpha out of range": (lambda w: w.distill("kd.alpha=1.5"), "kd.alpha=1.5"),
    "unknown precision": (lambda w: w.distill("train.precision=int4"), "train.precision=int4"),
    "misspelt key": (lambda w: w.distill("train.epoch=3"), "train.epoch"),
    "unknown recipe": (lambda w: w.distill("recipe=nope"), "recipe/nope"),
    "unknown finetune mode": (lambda w: w.distill("finetune.mode=sometimes"), "finetune.mode=sometimes"),
    "bad layer map": (lambda w: w.distill("student.teacher_layers=[9]"), "teacher_layers"),
    "unknown term parameter": (lambda w: w.distill("recipe=tinybert", "+recipe.stages.0.terms.1.params.layerz=uniform"),
                               "the tinybert_hidden term has no parameter layerz"),
    "bad compress setting": (lambda w: w.distill("compress.passes=[prune_ffn]", "+compress.settings.prune_ffn.ratioo=0.5"),
                             "ratioo"),
    "incompatible resume": (incompatible_resume, "cannot resume"),
    "compress: model missing": (lambda w: ["-m", "compress", f"model={w.root}/nope", f"hydra.run.dir={w.root}/run"], "does not exist"),
    "compress: unknown pass": (lambda w: ["-m", "compress", f"model={w.teacher}", "passes=[nope]", f"hydra.run.dir={w.root}/run"], "nope"),
    "compress: prune ratio 1.0": (lambda w: ["-m", "compress", f"model={w.teacher}", "passes=[prune_ffn]",
                                             "settings.prune_ffn.ratio=1.0", f"hydra.run.dir={w.root}/run"], "ratio"),
    "export: unknown variant": (lambda w: ["-m", "export", f"model={w.teacher}", "variants=[nope]", f"out={w.root}/onnx"], "nope"),
    "export: model missing": (lambda w: ["-m", "export", f"model={w.root}/nope", f"out={w.root}/onnx"], "does not exist"),
    "predict: bundle missing": (lambda w: ["-m", "export.predict", str(w.root / "nope"), "text"], "does not exist"),
    "predict: corrupt manifest": (lambda w: bundle(w, "{oops"), "corrupt"),
    "sweep without objectives": (lambda w: sweep_file(w, "study_name: s\nn_trials: 1\n"), "objectives"),
    "sweep: unknown name": (lambda w: ["-m", "distill.sweep", "sweep=nope"], "sweep=nope"),
    "sweep: n_trials=0": (lambda w: ["-m", "distill.sweep", "sweep=demo", "n_trials=0", f"out_dir={w.root}/sweeps"], "n_trials=0"),
    "sweep on PostgreSQL without the postgres extra": (without_psycopg2, "alembert[postgres]"),
    "alembert: unknown command": (lambda w: ["-m", "alembert", "train"], "unknown command 'train'"),
}


def cli_env() -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("ALEMBERT_DEBUG", "HYDRA_FULL_ERROR")}
    env.update(TQDM_DISABLE="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return env


def snapshot(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def assert_one_clean_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    errors = [line for line in result.stderr.splitlines() if line.startswith("alembert: error:")]
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert fragment in errors[0], errors[0]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_dir) -> Path:
    return tiny_dir("bert", layers=2)


@pytest.mark.parametrize("row", list(ROWS))
def test_bad_input_is_one_line_and_leaves_nothing(row, teacher, tmp_path):
    make, fragment = ROWS[row]
    workspace = Workspace(tmp_path, teacher)
    args = make(workspace)
    before = snapshot(tmp_path)
    result = subprocess.run([sys.executable, *args], cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert_one_clean_error(result, fragment)
    assert snapshot(tmp_path) - before == set(), "the failed run left files behind"


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs: room for Hydra's config files, not for a model (needs root; skipped otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root): the full-disk row is not run")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_is_one_line_naming_the_directory_and_bytes(teacher, tmp_path, tiny_disk):
    workspace = Workspace(tmp_path, teacher)
    args = workspace.distill(f"hydra.run.dir={tiny_disk}/run")
    result = subprocess.run([sys.executable, *args], cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert_one_clean_error(result, str(tiny_disk))
    assert "bytes needed" in result.stderr or "No space left" in result.stderr
    assert list(tiny_disk.iterdir()) == [], "the failed run left files on the full disk"


def test_teacher_head_for_other_labels_is_fine_tuned_not_refused(teacher, tmp_path):
    """A head trained for 2 labels on a 3-label task: re-initialised and fine-tuned, with a 3-way student."""
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\n" + "".join(f"film {i}\t{['a', 'b', 'c'][i % 3]}\n" for i in range(24)))
    workspace = Workspace(tmp_path, teacher)
    args = workspace.files_task(train, "finetune.mode=auto", "finetune.train.epochs=1")
    result = subprocess.run([sys.executable, *args], cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "student")
    assert student.config.num_labels == 3
    assert json.loads((tmp_path / "run" / "summary.json").read_text())[0]["model"] == "teacher"
    assert torch.isfinite(student.classifier.weight).all()
