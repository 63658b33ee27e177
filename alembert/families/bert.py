"""BERT and ELECTRA: the layout every other entry is described against."""

from types import MappingProxyType

from alembert.families.base import BERT_PARTS, AlbertSource, Family, register

register(Family("bert", layers="encoder.layer", parts=BERT_PARTS, albert=AlbertSource()))
# ELECTRA's E-wide embeddings and their projection are ALBERT's factorized ones; its sequence head has GELU, not tanh
register(Family("electra", layers="encoder.layer", parts=BERT_PARTS, albert=AlbertSource(
    projection="embeddings_project", head_activation="gelu",
    head=MappingProxyType({"classifier.dense.": "albert.pooler.", "classifier.out_proj.": "classifier."}))))
