"""prune_vocab: the embedding table keeps the training data's tokens; the saved tokenizer matches it in plain
transformers, text of kept tokens encodes as before (ids remapped), a pruned token becomes UNK, and the pass composes
with factorization, int8 and recovery."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from conftest import tiny_config, tiny_tokenizer, vocabulary
from tokenizers_real import real_tokenizer
from alembert.data import DataConfig
from alembert.demo import DemoConfig
from alembert.errors import AlembertError
from alembert.training import TrainConfig
from alembert.vocab import tokenizer_for
from alembert.word_vocab import WordVocabConfig, word_tokenizer
from compress.cli import task_loaders
from compress.passes.factorize import FactorizeEmbeddingsConfig
from compress.passes.quantize import QuantizeDynamicConfig
from compress.passes.vocab import PruneVocabConfig
from compress.pipeline import RecoveryConfig, Step, run_pipeline
from compress.registry import apply
from compress.saving import load_compressed
from distill.recovery import kd_recovery

DATA = DataConfig(demo=DemoConfig(train_size=60, dev_size=20, test_size=10), max_length=96)  # no sentence truncated
TRAIN_TEXT = "the acting was superb"  # demo words: every token occurs in the training data


def model_for(tokenizer, family: str = "bert"):
    torch.manual_seed(0)
    config = tiny_config(family, len(tokenizer), 2)
    config.pad_token_id = tokenizer.pad_token_id
    return AutoModelForSequenceClassification.from_config(config).eval()


def pruned_pair(tokenizer, family="bert"):
    model = model_for(tokenizer, family)
    data = task_loaders(DATA, tokenizer, model, batch_size=16)
    pruned = apply(model_for(tokenizer, family), PruneVocabConfig(), batches=data.train, tokenizer=tokenizer)
    return model, pruned, tokenizer_for(pruned, tokenizer), data


def tokenizer_of(kind: str, directory):
    if kind == "wordpiece":
        return tiny_tokenizer(directory)
    if kind == "wordlevel":  # student.tokenizer=words over every demo word: the 60 sentences use only some
        return word_tokenizer([" ".join(vocabulary())], tiny_tokenizer(directory), WordVocabConfig())
    return real_tokenizer(kind, directory)


@pytest.mark.parametrize("kind", ["wordpiece", "wordlevel", "deberta-v3-unigram", "xlmr-unigram"])
def test_kept_text_encodes_the_same_and_a_pruned_token_becomes_unk(kind, tmp_path):
    tokenizer = tokenizer_of(kind, tmp_path / "tok")
    family = {"wordpiece": "bert", "wordlevel": "bert", "deberta-v3-unigram": "deberta-v2", "xlmr-unigram": "xlm-roberta"}[kind]
    original, pruned, new_tokenizer, data = pruned_pair(tokenizer, family)
    kept = pruned.config.alembert_compression[-1]["kept_ids"]
    assert len(new_tokenizer) == len(kept) == pruned.get_input_embeddings().num_embeddings < len(tokenizer)
    before, after = tokenizer(TRAIN_TEXT)["input_ids"], new_tokenizer(TRAIN_TEXT)["input_ids"]
    assert [kept[i] for i in after] == before  # the same tokens, in new ids
    with torch.no_grad():  # and the same logits, since every kept row is the old row
        torch.testing.assert_close(pruned(input_ids=torch.tensor([after])).logits,
                                   original(input_ids=torch.tensor([before])).logits, rtol=0, atol=1e-6)
    gone = [i for i in range(len(tokenizer)) if i not in set(kept) and i not in tokenizer.all_special_ids]
    words = {i: tokenizer.convert_ids_to_tokens(i).lstrip("▁") for i in gone if not tokenizer.convert_ids_to_tokens(i).startswith("##")}
    word = next(i for i, text in words.items() if text and tokenizer(text, add_special_tokens=False)["input_ids"] == [i])
    respelled = [kept[i] for i in new_tokenizer(words[word], add_special_tokens=False)["input_ids"]]
    assert word not in respelled  # a pruned word is spelled with kept pieces, or UNK where none covers it
    letters = [i for i, text in words.items() if len(text) == 1 and i in tokenizer(text, add_special_tokens=False)["input_ids"]]
    assert letters or kind != "wordpiece"  # the tiny WordPiece vocabulary has every letter; 60 sentences miss some
    for letter in letters:  # a character no kept piece covers becomes UNK
        assert new_tokenizer.unk_token_id in new_tokenizer(words[letter], add_special_tokens=False)["input_ids"]
    assert new_tokenizer.pad_token_id == kept.index(tokenizer.pad_token_id) == pruned.config.pad_token_id


def test_a_byte_level_bpe_tokenizer_is_refused_in_one_line(tmp_path):
    tokenizer = real_tokenizer("byte-bpe", tmp_path / "tok")
    data = task_loaders(DATA, tokenizer, model_for(tokenizer, "roberta"), batch_size=16)
    with pytest.raises(AlembertError, match=r"prune_vocab does not support BPE tokenizers: dropping a token would break"):
        apply(model_for(tokenizer, "roberta"), PruneVocabConfig(), batches=data.train, tokenizer=tokenizer)


def test_the_pipeline_saves_a_model_and_tokenizer_that_plain_transformers_load_and_agree(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    model = model_for(tokenizer)
    data = task_loaders(DATA, tokenizer, model, batch_size=16)
    final, rows = run_pipeline(model_for(tokenizer), tokenizer,
                               [PruneVocabConfig(), FactorizeEmbeddingsConfig(embedding_size=16), QuantizeDynamicConfig()],
                               data=data, out_dir=tmp_path / "out", seq_len=16)
    assert [row["step"] for row in rows] == ["input", "prune_vocab", "factorize_embeddings", "quantize_dynamic"]
    assert rows[1]["size_mb"] < rows[0]["size_mb"] and rows[1]["vocab_kept"] < rows[1]["vocab_before"] == len(tokenizer)
    assert 0.0 < rows[1]["dev_unk_share"] < 0.5  # dev words the 60 training sentences lack became UNK
    saved = AutoTokenizer.from_pretrained(tmp_path / "out" / "model")
    assert len(saved) == rows[1]["vocab_kept"]
    reloaded = load_compressed(tmp_path / "out" / "model")
    with torch.no_grad():
        ours = reloaded(**saved([TRAIN_TEXT], return_tensors="pt")).logits
        theirs = final(**saved([TRAIN_TEXT], return_tensors="pt")).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_recovery_after_pruning_reads_the_new_ids_on_both_sides(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    data = task_loaders(DATA, tokenizer, model_for(tokenizer), batch_size=16)
    recovery = RecoveryConfig(at_end=False, train=TrainConfig(epochs=1, batch_size=16, lr=1e-3))
    _, rows = run_pipeline(model_for(tokenizer), tokenizer, [Step(PruneVocabConfig(), recover=True)], data=data,
                           recovery=recovery, seq_len=16, distiller=kd_recovery)
    assert [row["step"] for row in rows] == ["input", "prune_vocab", "prune_vocab + recovery"]


def test_the_pruned_bundle_exports_with_parity_and_its_predictor_reads_raw_text(tmp_path):
    from export.bundle import export_model
    from export.config import ExportConfig, LatencyConfig, ParityConfig
    from export.runtime import Predictor

    tokenizer = tiny_tokenizer(tmp_path / "tok")
    _, pruned, new_tokenizer, _ = pruned_pair(tokenizer)
    config = ExportConfig(variants=("optimized",), parity=ParityConfig(batch_sizes=(1, 2), max_lengths=(16,), samples=4),
                          latency=LatencyConfig(runs=2, warmup=1))
    bundle = export_model(pruned, new_tokenizer, tmp_path / "bundle", config)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["variants"]["fp32"]["max_abs_diff"] <= manifest["variants"]["fp32"]["tolerance"]
    with torch.no_grad():
        expected = pruned(**new_tokenizer([TRAIN_TEXT], return_tensors="pt")).logits.argmax(-1).item()
    assert Predictor(bundle).predict([TRAIN_TEXT])[0]["label"] == pruned.config.id2label[expected]


def test_tokens_of_the_named_text_files_are_kept_too_and_a_missing_file_is_one_line(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    data = task_loaders(DATA, tokenizer, model_for(tokenizer), batch_size=16)
    plain = apply(model_for(tokenizer), PruneVocabConfig(), batches=data.train, tokenizer=tokenizer)
    gone = next(i for i in range(len(tokenizer)) if i not in set(plain.config.alembert_compression[-1]["kept_ids"])
                and not tokenizer.convert_ids_to_tokens(i).startswith("##") and i not in tokenizer.all_special_ids)
    (tmp_path / "use.txt").write_text(tokenizer.convert_ids_to_tokens(gone) + "\n", encoding="utf-8")
    widened = apply(model_for(tokenizer), PruneVocabConfig(texts=(str(tmp_path / "use.txt"),)), batches=data.train,
                    tokenizer=tokenizer)
    assert gone in widened.config.alembert_compression[-1]["kept_ids"]
    with pytest.raises(AlembertError, match=r"prune_vocab.texts: .*nope.txt does not exist"):
        apply(model_for(tokenizer), PruneVocabConfig(texts=(str(tmp_path / "nope.txt"),)), batches=data.train,
              tokenizer=tokenizer)
