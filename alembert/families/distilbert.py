"""DistilBERT: `transformer.layer`, its own config keys and projection names, and no token types."""

from types import MappingProxyType

from alembert.families.base import Family, register

register(Family("distilbert", layers="transformer.layer", layer_count_key="n_layers", ffn_key="hidden_dim", head_count_attr="n_heads",
                value_suffix=".attention.v_lin", attention_suffix=".attention",
                parts=MappingProxyType({"self_attention": "attention", "query": "attention.q_lin", "key": "attention.k_lin",
                                        "value": "attention.v_lin", "attention_out": "attention.out_lin",
                                        "ffn_in": "ffn.lin1", "ffn_out": "ffn.lin2"})))
