"""Tiny tokenizers of the kinds real teachers ship, trained with the `tokenizers` library on the demo task's text
(nothing is downloaded): RoBERTa's byte-level BPE (<pad> is id 1), XLM-R's SentencePiece Unigram (<pad> is id 1)
and DeBERTa-v3's SentencePiece Unigram with [CLS]/[SEP] (its [PAD] is id 0)."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from alembert.demo import DemoConfig, generate

ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4, as roberta-base and xlm-roberta-base
DEBERTA_SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]  # ids 0..4, as deberta-v3-base


def _corpus() -> list[str]:
    splits = generate(DemoConfig(train_size=400, dev_size=50, test_size=50))
    return [row["sentence"] for rows in splits.values() for row in rows]


def _byte_bpe() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=ROBERTA_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(_corpus(), trainer)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
    return tokenizer


def _unigram(specials: list[str], unk: str, template: processors.TemplateProcessing) -> Tokenizer:
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=300, special_tokens=specials, unk_token=unk, show_progress=False)
    tokenizer.train_from_iterator(_corpus(), trainer)
    tokenizer.post_processor = template
    return tokenizer


def _xlmr() -> Tokenizer:
    return _unigram(ROBERTA_SPECIALS, "<unk>", processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]))


def _deberta_v3() -> Tokenizer:
    return _unigram(DEBERTA_SPECIALS, "[UNK]", processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 1), ("[SEP]", 2)]))


KINDS = {
    "byte-bpe": (_byte_bpe, dict(bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>", pad_token="<pad>",
                                 unk_token="<unk>", mask_token="<mask>")),
    "xlmr-unigram": (_xlmr, dict(bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>", pad_token="<pad>",
                                 unk_token="<unk>", mask_token="<mask>")),
    "deberta-v3-unigram": (_deberta_v3, dict(cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]",
                                             mask_token="[MASK]")),
}


def real_tokenizer(kind: str, directory: Path) -> PreTrainedTokenizerFast:
    """The tiny tokenizer of `kind`, saved to `directory` as transformers saves a hub tokenizer."""
    build, specials = KINDS[kind]
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=build(), model_max_length=128, **specials)
    tokenizer.save_pretrained(directory)
    return tokenizer
