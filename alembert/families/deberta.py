"""DeBERTa-v2 and v3 (model_type deberta-v2): BERT's layer layout with `*_proj` projections and relative positions
shared by every layer (encoder.rel_embeddings, copied whole to a student); transformers has no sdpa path for it."""

from types import MappingProxyType

from alembert.families.base import Family, register

register(Family("deberta-v2", layers="encoder.layer", value_suffix=".attention.self.value_proj", attention="eager",
                parts=MappingProxyType({"self_attention": "attention.self", "query": "attention.self.query_proj",
                                        "key": "attention.self.key_proj", "value": "attention.self.value_proj",
                                        "attention_out": "attention.output.dense", "ffn_in": "intermediate.dense",
                                        "ffn_out": "output.dense"})))
