"""MPNet: `attention.attn.{q,k,v,o}`, a relative-position bias shared by every layer (copied whole to a student),
RoBERTa's position numbering and no token types; transformers has no sdpa path for it."""

from types import MappingProxyType

from alembert.families.base import Family, register

register(Family("mpnet", layers="encoder.layer", value_suffix=".attention.attn.v", attention_suffix=".attention.attn",
                attention="eager", positions_after_padding=True, compact_heads=False,
                parts=MappingProxyType({"self_attention": "attention.attn", "query": "attention.attn.q", "key": "attention.attn.k",
                                        "value": "attention.attn.v", "attention_out": "attention.attn.o",
                                        "ffn_in": "intermediate.dense", "ffn_out": "output.dense"})))
