"""RoBERTa and XLM-RoBERTa: BERT's layers, with positions numbered from the padding index + 1."""

from alembert.families.base import BERT_PARTS, Family, register

for model_type in ("roberta", "xlm-roberta"):
    register(Family(model_type, layers="encoder.layer", parts=BERT_PARTS, positions_after_padding=True, albert_source=True))
