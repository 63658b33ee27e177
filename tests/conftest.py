"""Tiny models built from configs (a few layers, hidden 32), saved to tmp dirs with a tiny tokenizer: no downloads."""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # before anything imports tqdm: it reads the variable once
from pathlib import Path

import pytest
import torch
from transformers import (AutoModelForMaskedLM, AutoModelForSequenceClassification, BertConfig, BertTokenizerFast, DistilBertConfig,
                          AlbertConfig, DebertaV2Config, ElectraConfig, ModernBertConfig, MPNetConfig, RobertaConfig,
                          XLMRobertaConfig)

from alembert.demo import vocabulary

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub look-up fails at once instead of after network time-outs
torch.set_num_threads(2)

SST2_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sst2"
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LABELS = ("negative", "positive")


def tiny_tokenizer(directory: Path, extra: tuple[str, ...] = ()) -> BertTokenizerFast:
    """A WordPiece tokenizer over the demo task's words plus single letters, so any text tokenises; `extra` words
    (another demo's) come last, so the ids of the others stay the same."""
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'") + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    vocab = SPECIAL + vocabulary() + [c for c in letters if c not in vocabulary()]
    vocab += [word for word in dict.fromkeys(extra) if word not in vocab]
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(directory)
    return tokenizer


def tiny_config(family: str, vocab_size: int, layers: int = 4):
    common = dict(vocab_size=vocab_size, num_labels=2, id2label=dict(enumerate(LABELS)),
                  label2id={name: i for i, name in enumerate(LABELS)}, pad_token_id=0)
    configs = {
        "bert": lambda: BertConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=128, **common),
        "roberta": lambda: RobertaConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                                         intermediate_size=64, max_position_embeddings=130, **common),
        "distilbert": lambda: DistilBertConfig(dim=32, n_layers=layers, n_heads=4, hidden_dim=64,
                                               max_position_embeddings=128, **common),
        "xlm-roberta": lambda: XLMRobertaConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                                                intermediate_size=64, max_position_embeddings=130, **common),
        "albert": lambda: AlbertConfig(embedding_size=16, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                                       intermediate_size=64, max_position_embeddings=128, **common),
        "deberta-v2": lambda: DebertaV2Config(hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=64,
                                              max_position_embeddings=128, relative_attention=True, position_buckets=16,
                                              pos_att_type=["p2c", "c2p"], share_att_key=True, norm_rel_ebd="layer_norm",
                                              type_vocab_size=0, **common),
        "mpnet": lambda: MPNetConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=130, **common),
        "modernbert": lambda: ModernBertConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=64,
                                               max_position_embeddings=128, global_attn_every_n_layers=2, local_attention=16,
                                               bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3, **common),
        "electra": lambda: ElectraConfig(embedding_size=32, hidden_size=32, num_hidden_layers=layers,
                                         num_attention_heads=4, intermediate_size=64, max_position_embeddings=128, **common),
    }
    return configs[family]()


FAMILIES = ("bert", "roberta", "distilbert", "electra")


def save_tiny_mlm(directory: Path, layers: int) -> Path:
    """A tiny BERT with an MLM head, saved with the tiny tokenizer; a wide init range makes its predictions peaked."""
    tokenizer = tiny_tokenizer(directory)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, initializer_range=0.2)
    AutoModelForMaskedLM.from_config(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """Factory: tiny_dir(family, layers=4) -> a saved random model directory with tokenizer and labels."""
    cache: dict = {}

    def make(family: str = "bert", layers: int = 4) -> Path:
        if (family, layers) not in cache:
            directory = tmp_path_factory.mktemp(f"tiny-{family}-{layers}")
            tokenizer = tiny_tokenizer(directory / "tok")
            torch.manual_seed(0)
            model = AutoModelForSequenceClassification.from_config(tiny_config(family, len(tokenizer), layers))
            model.save_pretrained(directory)
            tokenizer.save_pretrained(directory)
            cache[family, layers] = directory
        return cache[family, layers]

    return make


@pytest.fixture
def sst2_dir() -> Path:
    if not (SST2_DIR / "train.tsv").is_file():
        pytest.skip(f"SST-2 not found at {SST2_DIR} (it ships in ../shared beside the repository, on CI)")
    return SST2_DIR


def demo_loaders(tokenizer, *, train_size: int = 24, batch_size: int = 4, max_length: int = 16):
    """Train (shuffled) and dev loaders over the demo task's first examples, for tiny training runs."""
    from alembert.data import DataConfig, encode, load_task, loader
    from alembert.demo import DemoConfig
    from alembert.tasks import task_named

    config = DataConfig(demo=DemoConfig(train_size=train_size, dev_size=8, test_size=8), max_length=max_length)
    task = load_task(config)
    train = loader(encode(task, "train", tokenizer, config), tokenizer, batch_size=batch_size,
                   task=task_named("classification"), shuffle=True)
    dev = loader(encode(task, "dev", tokenizer, config), tokenizer, batch_size=8, task=task_named("classification"))
    return train, dev


def without_dropout(model):
    """`model` with every dropout at 0, so that train-mode forwards are deterministic."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model
