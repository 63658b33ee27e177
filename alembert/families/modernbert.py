"""ModernBERT: `layers.N` with a fused query/key/value projection and a gated FFN, and a per-layer attention pattern
(`layer_types`: full or sliding) that a student and a cut model keep for the layers they keep.

Head and FFN pruning read its fused layout through alembert.fused_units (torch-pruning's tracer couples the wrong
channels through Wqkv's unbind); heads are zeroed, not cut out, since its config fixes one head count for all layers.
"""

from types import MappingProxyType

from alembert.families.base import Family, register

register(Family("modernbert", layers="layers", value_suffix=".attn.Wqkv", fused_qkv=True, gated_ffn=True,
                attention_suffix=".attn", per_layer_keys=("layer_types",), compact_heads=False,
                parts=MappingProxyType({"self_attention": "attn", "qkv": "attn.Wqkv", "attention_out": "attn.Wo",
                                        "ffn_in": "mlp.Wi", "ffn_out": "mlp.Wo"}),
                ort_model_type=None))  # no onnxruntime fusion matches its attention
