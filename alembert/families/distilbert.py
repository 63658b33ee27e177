"""DistilBERT: `transformer.layer`, its own config keys, and no token types."""

from alembert.families.base import Family, register

register(Family("distilbert", layers="transformer.layer", layer_count_key="n_layers", ffn_key="hidden_dim",
                value_suffix=".attention.v_lin", attention_suffix=".attention"))
