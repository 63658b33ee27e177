"""LayerDrop: the drop pattern is a pure function of (seed, step), the same in every process (so on every rank);
rate 0 trains exactly as without it; a trained model is plain again and is cut to any depth by drop_layers, the way
the LayerDrop paper keeps layers, and the cut model reloads."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from alembert.errors import AlembertError
from alembert.modeldir import load_classifier, load_tokenizer
from alembert.training import TrainConfig
from compress.passes.layers import DropLayersConfig, drop_layers, layers_to_drop
from conftest import demo_loaders
from distill.engine import fit
from distill.layerdrop import LayerDropLayers, layer_drop
from distill.losses import Objective, Term
from distill.models import Teacher
from distill.recipes import RecipeConfig, StageConfig, TermConfig, check_recipe

HARD = Objective((Term("hard", 1.0),))
PATTERN = """
import torch
from distill.layerdrop import LayerDropLayers
torch.manual_seed({global_seed})
layers = LayerDropLayers([torch.nn.Identity() for _ in range(6)], rate=0.3, seed=11)
patterns = []
for step in range(40):
    layers.at_step(step, step / 40)
    patterns.append(layers.kept())
print(patterns)
"""


def patterns_in_a_process(rank: int, global_seed: int) -> str:
    env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "PYTHONHASHSEED": str(rank + 100)}
    done = subprocess.run([sys.executable, "-c", PATTERN.format(global_seed=global_seed)], capture_output=True,
                          text=True, env=env, timeout=300, check=True)
    return done.stdout


def test_the_drop_pattern_is_the_same_in_every_process_and_follows_the_seed():
    first, second = patterns_in_a_process(0, 1), patterns_in_a_process(1, 2)
    assert first == second  # another rank, another global seed, another hash seed: the same layers dropped
    patterns = ast.literal_eval(first)
    assert len({tuple(p) for p in patterns}) > 10  # the pattern changes from step to step
    dropped = sum(6 - len(p) for p in patterns) / (6 * len(patterns))
    assert 0.15 < dropped < 0.45
    other = LayerDropLayers([torch.nn.Identity() for _ in range(6)], rate=0.3, seed=12)
    redrawn = []
    for step in range(40):
        other.at_step(step, step / 40)
        redrawn.append(other.kept())
    assert redrawn != patterns  # another seed, another pattern


def test_in_training_only_the_kept_layers_run_and_in_eval_all_do():
    layers = LayerDropLayers([torch.nn.Linear(2, 2) for _ in range(5)], rate=0.5, seed=3)
    layers.at_step(4, 0.5)
    kept = layers.kept()
    assert [id(m) for m in layers] == [id(layers[i]) for i in kept] and len(kept) < 5
    layers.eval()
    assert len(list(layers)) == 5 and len(layers) == 5


def test_rate_0_trains_exactly_as_without_layerdrop(tiny_dir):
    tokenizer = load_tokenizer(str(tiny_dir("bert", 2)))
    weights = []
    for rate in (None, 0.0):
        model = load_classifier(str(tiny_dir("bert", 2)))[0]  # dropout 0.1 on: its random stream must be untouched
        train, dev = demo_loaders(tokenizer)
        fit(model, train, dev, HARD, TrainConfig(epochs=2, batch_size=4, lr=1e-3, layerdrop=rate))
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_training_with_layerdrop_leaves_a_plain_model_and_skips_layers(tiny_dir):
    tokenizer = load_tokenizer(str(tiny_dir("bert", 4)))
    runs = []
    for rate in (None, 0.5):
        model = load_classifier(str(tiny_dir("bert", 4)))[0]
        train, dev = demo_loaders(tokenizer)
        calls = []
        hooks = [layer.register_forward_hook(lambda *_: calls.append(1)) for layer in model.bert.encoder.layer]
        fit(model, train, None, HARD, TrainConfig(epochs=1, batch_size=4, layerdrop=rate))
        for hook in hooks:
            hook.remove()
        runs.append(len(calls))
        assert type(model.bert.encoder.layer) is torch.nn.ModuleList and len(model.bert.encoder.layer) == 4
    assert runs[0] == 6 * 4 and 0 < runs[1] < runs[0] * 0.8  # 6 batches x 4 layers without it


def test_layer_wise_terms_are_refused_with_layerdrop(tiny_dir):
    model = load_classifier(str(tiny_dir("bert", 2)))[0]
    train, dev = demo_loaders(load_tokenizer(str(tiny_dir("bert", 2))))
    with pytest.raises(AlembertError, match="LayerDrop would skip") as err:
        fit(model, train, dev, Objective((Term("tinybert_hidden", 1.0),)), TrainConfig(epochs=1, layerdrop=0.2),
            teacher=Teacher(load_classifier(str(tiny_dir("bert", 2)))[0]))
    assert "\n" not in str(err.value)
    recipe = RecipeConfig(stages=(StageConfig(terms=(TermConfig("minilm_attention"),)),))
    with pytest.raises(AlembertError, match="LayerDrop would skip"):
        check_recipe(recipe, layerdrop=0.1)
    check_recipe(recipe)  # without LayerDrop the recipe is fine


def test_an_unsupported_family_is_refused_in_one_line():
    from transformers import AlbertConfig, AlbertForSequenceClassification

    albert = AlbertForSequenceClassification(AlbertConfig(vocab_size=50, embedding_size=8, hidden_size=16,
                                                          num_hidden_layers=2, num_attention_heads=2, intermediate_size=16))
    with pytest.raises(AlembertError, match="does not support the 'albert' model family") as err:
        with layer_drop(albert, 0.2, 0):
            pass
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("depth, kept", [
    (6, [0, 1, 2, 3, 4, 5]),
    (5, [0, 1, 2, 3, 4]),  # rate 1/6: drop 1-based depth 6
    (4, [0, 1, 3, 4]),  # rate 1/3: drop 1-based depths 3 and 6
    (3, [0, 2, 4]),  # rate 1/2: drop 1-based depths 2, 4, 6 (= strategy alternate)
    (2, [0, 3]),
    (1, [0]),
])
def test_drop_layers_depth_keeps_the_layers_the_layerdrop_paper_keeps(depth, kept):
    dropped = layers_to_drop(6, DropLayersConfig(strategy="depth", depth=depth))
    assert [i for i in range(6) if i not in dropped] == kept
    if depth == 3:
        assert dropped == layers_to_drop(6, DropLayersConfig(strategy="alternate"))


def test_a_model_cut_to_a_depth_reloads_with_the_same_logits(tiny_dir, tmp_path):
    model = load_classifier(str(tiny_dir("bert", 4)))[0].eval()
    inputs = {"input_ids": torch.tensor([[2, 10, 11, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    layer_2 = model.bert.encoder.layer[2]
    cut = drop_layers(model, DropLayersConfig(strategy="depth", depth=2))
    assert cut.config.num_hidden_layers == 2 and cut.bert.encoder.layer[1] is layer_2
    cut.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, cut(**inputs).logits)
    with pytest.raises(AlembertError, match="drop_layers.depth=5 must be between 1 and 4"):
        layers_to_drop(4, DropLayersConfig(strategy="depth", depth=5))
    with pytest.raises(AlembertError, match="needs drop_layers.depth"):
        DropLayersConfig(strategy="depth")
