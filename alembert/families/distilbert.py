"""DistilBERT: `transformer.layer`, its own config keys and projection names, and no token types."""

from types import MappingProxyType

from alembert.families.base import AlbertSource, Family, register

TO_ALBERT = AlbertSource(
    layer_keys=MappingProxyType({
        "attention.q_lin": "attention.query", "attention.k_lin": "attention.key", "attention.v_lin": "attention.value",
        "attention.out_lin": "attention.dense", "sa_layer_norm": "attention.LayerNorm", "ffn.lin1": "ffn",
        "ffn.lin2": "ffn_output", "output_layer_norm": "full_layer_layer_norm"}),
    config_keys=MappingProxyType({
        "hidden_size": "dim", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads", "intermediate_size": "hidden_dim",
        "hidden_act": "activation", "hidden_dropout_prob": "dropout", "attention_probs_dropout_prob": "attention_dropout",
        "classifier_dropout": "seq_classif_dropout"}),
    token_types=False, head_activation="relu",
    head=MappingProxyType({"pre_classifier.": "albert.pooler."}))

register(Family("distilbert", layers="transformer.layer", layer_count_key="n_layers", ffn_key="hidden_dim", head_count_attr="n_heads",
                value_suffix=".attention.v_lin", attention_suffix=".attention", albert=TO_ALBERT,
                parts=MappingProxyType({"self_attention": "attention", "query": "attention.q_lin", "key": "attention.k_lin",
                                        "value": "attention.v_lin", "attention_out": "attention.out_lin",
                                        "ffn_in": "ffn.lin1", "ffn_out": "ffn.lin2"})))
