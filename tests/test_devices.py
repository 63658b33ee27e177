"""train.device: resolution against what torch sees, placement of everything that trains, and collectives on the
rank's device. No GPU is needed: CUDA is faked where the logic asks for it, and `meta` stands in for a device."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import demo_loaders
from alembert import devices
from alembert.config import from_dict
from alembert.errors import AlembertError
from alembert.modeldir import load_classifier, load_tokenizer
from alembert.training import TrainConfig
from distill import distributed, engine
from distill.losses import Objective, Term
from distill.models import Teacher


@pytest.fixture
def fake_gpus(monkeypatch):
    """A machine with two CUDA GPUs, as far as device resolution can tell."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    return monkeypatch


def test_auto_is_the_cpu_without_cuda_and_this_ranks_gpu_with_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert devices.resolve_device("auto") == torch.device("cuda", 1)
    assert devices.resolve_device("cuda") == torch.device("cuda", 1)
    assert devices.resolve_device("cuda:0") == torch.device("cuda", 0)


@pytest.mark.parametrize("spec, local_rank, message", [
    ("cuda:2", "0", r"train.device: cuda:2 names GPU 2 but this machine has 2; .*cuda:0 \.\. cuda:1"),
    ("cuda", "3", r"train.device: LOCAL_RANK=3 names GPU 3 but this machine has 2; start at most 2 processes per node"),
])
def test_a_gpu_beyond_the_machines_is_refused(spec, local_rank, message, fake_gpus):
    fake_gpus.setenv("LOCAL_RANK", local_rank)
    with pytest.raises(AlembertError, match=message):
        devices.resolve_device(spec)


def test_cuda_without_a_gpu_and_a_misspelled_device_are_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(AlembertError, match=r"train.device asks for a CUDA GPU but torch .* sees none; use train.device=cpu"):
        devices.resolve_device("cuda")
    with pytest.raises(AlembertError, match=r"device=gpu is not auto, cpu, cuda, cuda:N or mps; set device to auto, cpu"):
        from_dict(TrainConfig, {"device": "gpu"})
    assert from_dict(TrainConfig, {"device": "cuda:3"}).device == "cuda:3"  # checked against the machine at fit


def test_fp16_is_refused_off_cuda_before_training(tiny_dir):
    model, _ = load_classifier(str(tiny_dir("bert", layers=1)))
    train, dev = demo_loaders(load_tokenizer(str(tiny_dir("bert", layers=1))))
    with pytest.raises(AlembertError, match=r"train.precision=fp16 needs a CUDA GPU .* but training runs on cpu"):
        engine.fit(model, train, dev, Objective((Term("hard", 1.0),)), TrainConfig(precision="fp16", device="cpu"))


def test_nccl_only_for_ranks_on_gpus(fake_gpus):
    calls = []
    fake_gpus.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    fake_gpus.setattr(torch.distributed, "init_process_group", lambda backend: calls.append(("init", backend)))
    fake_gpus.setattr(torch.distributed, "is_initialized", lambda: False)
    fake_gpus.setenv("WORLD_SIZE", "2")
    distributed.init_from_env(torch.device("cpu"))  # a CPU run on a GPU machine: gloo, whatever CUDA says
    distributed.init_from_env(torch.device("cuda", 1))
    assert calls == [("init", "gloo"), ("set_device", torch.device("cuda", 1)), ("init", "nccl")]


class Reduced(Exception):
    """Raised by the fake all-reduce once it has seen its tensor."""


@pytest.mark.parametrize("collective", [lambda d: distributed.agree_min(7, d),
                                        lambda d: distributed.mean_over_ranks({"loss": 0.5, "kd": 0.1}, d)])
def test_collectives_reduce_tensors_on_the_given_device(collective, monkeypatch):
    seen = []

    def all_reduce(tensor, op=None):
        seen.append(tensor.device)
        raise Reduced

    monkeypatch.setattr(distributed, "world", lambda: (0, 2))
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    with pytest.raises(Reduced):
        collective(torch.device("meta"))  # NCCL would refuse a CPU tensor here; meta proves where it was made
    assert seen == [torch.device("meta")]


def test_fit_puts_student_projection_and_teacher_on_the_device_and_reduces_there(tiny_dir, monkeypatch):
    """The engine moves all that trains to train.device before anything runs; its first collective uses it."""
    student, _ = load_classifier(str(tiny_dir("bert", layers=1)))
    teacher, _ = load_classifier(str(tiny_dir("bert", layers=2)))
    projection = nn.Linear(4, 4)
    train, dev = demo_loaders(load_tokenizer(str(tiny_dir("bert", layers=1))))
    seen = []

    def agree_min(value, device):
        seen.append(device)
        raise Reduced

    monkeypatch.setattr(engine, "resolve_device", lambda spec: torch.device("meta"))
    monkeypatch.setattr(distributed, "agree_min", agree_min)
    objective = Objective((Term("hard", 0.5), Term("kd", 0.5)))
    with pytest.raises(Reduced):
        engine.fit(student, train, dev, objective, TrainConfig(cache_teacher=False), teacher=Teacher(teacher),
                   extra_modules=(projection,))
    on = {p.device for module in (student, teacher, projection) for p in module.parameters()}
    assert on == {torch.device("meta")} and seen == [torch.device("meta")]


def test_gpu_batches_are_pinned_and_the_summary_names_the_device(tiny_dir):
    train, _ = demo_loaders(load_tokenizer(str(tiny_dir("bert", layers=1))))
    assert distributed.shard_loader(train, 0, pin_memory=devices.pins_memory(torch.device("cuda", 0))).pin_memory
    assert not distributed.shard_loader(train, 0, pin_memory=devices.pins_memory(torch.device("cpu"))).pin_memory
    record = devices.device_record(torch.device("cpu"), torch.bfloat16)
    assert record["device"] == "cpu" and record["dtype"] == "bfloat16" and "flags:" in record["cpu"]
