"""ModernBERT: `layers.N` with a fused query/key/value projection and a gated FFN, and a per-layer attention pattern
(`layer_types`: full or sliding) that a student and a cut model keep for the layers they keep.

No head or FFN pruning yet: its fused Wqkv and gated Wi couple rows those passes would have to cut together.
"""

from alembert.families.base import Family, register

register(Family("modernbert", layers="layers", value_suffix=".attn.Wqkv", fused_qkv=True, attention_suffix=".attn",
                per_layer_keys=("layer_types",), ort_model_type=None))  # no onnxruntime fusion matches its attention
