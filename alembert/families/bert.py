"""BERT and ELECTRA: the layout every other entry is described against."""

from alembert.families.base import BERT_PARTS, Family, register

register(Family("bert", layers="encoder.layer", parts=BERT_PARTS, albert_source=True))
register(Family("electra", layers="encoder.layer", parts=BERT_PARTS))
