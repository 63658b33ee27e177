"""RoBERTa and XLM-RoBERTa: BERT's layers, with positions numbered from the padding index + 1."""

from types import MappingProxyType

from alembert.families.base import BERT_PARTS, AlbertSource, Family, register

# the sequence head (dense, tanh, out_proj) is ALBERT's pooler and classifier
ROBERTA_TO_ALBERT = AlbertSource(head=MappingProxyType({"classifier.dense.": "albert.pooler.", "classifier.out_proj.": "classifier."}))
for model_type in ("roberta", "xlm-roberta"):
    register(Family(model_type, layers="encoder.layer", parts=BERT_PARTS, positions_after_padding=True, albert=ROBERTA_TO_ALBERT))
