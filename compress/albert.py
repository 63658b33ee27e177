"""The BERT/RoBERTa -> ALBERT converter that layer sharing and embedding factorization both build on.

A BERT layer maps one-to-one onto an ALBERT layer (see LAYER_MAP). With one group per layer,
embedding_size == hidden_size and `embedding_hidden_mapping_in` set to the identity, the converted
model computes exactly what the original computed. RoBERTa numbers positions from padding_idx + 1:
the converter drops the unused leading rows of the position table, which is exact at every real token of
right-padded inputs (what the tokenizers produce); only a padding position's own output, which no task
reads, differs.

The ALBERT class is the one the model's task builds (alembert.tasks: AlbertForSequenceClassification,
AlbertForTokenClassification, and AlbertForQuestionAnswering for a span task), and the task head keeps its
weights under its own name (`classifier`, `qa_outputs`). RoBERTa's sequence head (dense, tanh, out_proj)
becomes ALBERT's pooler and classifier; a BERT pooler becomes ALBERT's, where the ALBERT class has one.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from transformers import AlbertConfig, PreTrainedModel

from alembert.families import FAMILIES, HISTORY_KEY, entry, family, require_family, supporting
from alembert.errors import fail
from alembert.tasks import task_of



def supported() -> tuple[str, ...]:
    """The families the converter maps exactly, and ALBERT itself (regrouped)."""
    return (*supporting("albert_source"), "albert")

LAYER_MAP = {  # BERT key inside encoder.layer[i]  ->  ALBERT key inside albert_layers[0]
    "attention.self.query": "attention.query",
    "attention.self.key": "attention.key",
    "attention.self.value": "attention.value",
    "attention.output.dense": "attention.dense",
    "attention.output.LayerNorm": "attention.LayerNorm",
    "intermediate.dense": "ffn",
    "output.dense": "ffn_output",
    "output.LayerNorm": "full_layer_layer_norm",
}
GROUP_PREFIX = "albert.encoder.albert_layer_groups.{group}.albert_layers.0."
INIT_MODES = ("mean", "first")
HEAD_RENAMES = {"classifier.dense.": "albert.pooler.", "classifier.out_proj.": "classifier."}  # RoBERTa's sequence head


def group_of(layer: int, layers: int, groups: int) -> int:
    """ALBERT's own rule (AlbertTransformer.forward): contiguous blocks of layers share a group."""
    return int(layer / (layers / groups))


def _albert_config(source, groups: int) -> AlbertConfig:
    cfg = source
    if cfg.model_type == "albert":
        config = copy.deepcopy(cfg)
        config.num_hidden_groups = groups
    else:
        offset = FAMILIES[cfg.model_type].position_offset(cfg)
        config = AlbertConfig(
            vocab_size=cfg.vocab_size, embedding_size=cfg.hidden_size, hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_hidden_layers, num_hidden_groups=groups, inner_group_num=1,
            num_attention_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size,
            hidden_act=cfg.hidden_act, hidden_dropout_prob=cfg.hidden_dropout_prob,
            attention_probs_dropout_prob=cfg.attention_probs_dropout_prob,
            max_position_embeddings=cfg.max_position_embeddings - offset, type_vocab_size=cfg.type_vocab_size,
            initializer_range=cfg.initializer_range, layer_norm_eps=cfg.layer_norm_eps,
            classifier_dropout_prob=getattr(cfg, "classifier_dropout", None) or cfg.hidden_dropout_prob,
            pad_token_id=cfg.pad_token_id, bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
            num_labels=cfg.num_labels, id2label=cfg.id2label, label2id=cfg.label2id, problem_type=cfg.problem_type,
        )
        setattr(config, HISTORY_KEY, list(getattr(cfg, HISTORY_KEY, None) or []))
    return config


def layer_states(model: nn.Module) -> list[dict[str, Tensor]]:
    """Each layer's weights under ALBERT's in-layer names (an ALBERT model's shared groups are repeated)."""
    if family(model) == "albert":
        cfg = model.config
        if cfg.inner_group_num != 1:
            raise fail(f"an ALBERT model with inner_group_num={cfg.inner_group_num} cannot be regrouped",
                       "only models with one layer per group (what alembert writes) are supported")
        groups = model.albert.encoder.albert_layer_groups
        return [groups[group_of(i, cfg.num_hidden_layers, cfg.num_hidden_groups)].albert_layers[0].state_dict()
                for i in range(cfg.num_hidden_layers)]
    states = []
    for layer in model.base_model.encoder.layer:
        source = layer.state_dict()
        states.append({f"{LAYER_MAP[key.rsplit('.', 1)[0]]}.{key.rsplit('.', 1)[1]}": value for key, value in source.items()})
    return states


def outer_state(model: nn.Module) -> dict[str, Tensor]:
    """Embeddings, embedding->hidden mapping, pooler (where there is one) and task head under ALBERT's names."""
    state = model.state_dict()
    if family(model) == "albert":
        return {k: v for k, v in state.items() if not k.startswith("albert.encoder.albert_layer_groups.")}
    prefix = model.base_model_prefix
    hidden = model.config.hidden_size
    offset = entry(model).position_offset(model.config)
    out = {f"albert.embeddings.{name}": state[f"{prefix}.embeddings.{name}"]
           for name in ("word_embeddings.weight", "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias")}
    out["albert.embeddings.position_embeddings.weight"] = state[f"{prefix}.embeddings.position_embeddings.weight"][offset:]
    out["albert.encoder.embedding_hidden_mapping_in.weight"] = torch.eye(hidden)
    out["albert.encoder.embedding_hidden_mapping_in.bias"] = torch.zeros(hidden)
    pooler = f"{prefix}.pooler.dense."
    out.update({"albert.pooler." + key.removeprefix(pooler): value for key, value in state.items() if key.startswith(pooler)})
    out.update({_head_name(key): value for key, value in state.items() if not key.startswith(f"{prefix}.")})
    return out


def _head_name(key: str) -> str:
    """A task-head key under ALBERT's name: kept as it is (classifier, qa_outputs), except RoBERTa's sequence head."""
    for source, target in HEAD_RENAMES.items():
        if key.startswith(source):
            return target + key.removeprefix(source)
    return key


def to_albert(model: nn.Module, groups: int, init: str = "mean") -> PreTrainedModel:
    """Convert (or regroup) `model` into an ALBERT model of the same task whose layers share weights in `groups` groups.

    init=mean starts each group from the average of its layers' weights; init=first from its first layer.
    """
    require_family(model, supported(), "ALBERT conversion (share_layers / factorize_embeddings)")
    if init not in INIT_MODES:
        raise fail(f"share_layers.init={init} is unknown", f"use one of {', '.join(INIT_MODES)}")
    layers = model.config.num_hidden_layers
    if not 1 <= groups <= layers:
        raise fail(f"share_layers.groups={groups} must be between 1 and the model's {layers} layers", f"pick 1..{layers}")
    target = task_of(model.config).model_class.from_config(_albert_config(model.config, groups)).eval()
    if hasattr(model.config, "_attn_implementation"):
        target.set_attn_implementation(model.config._attn_implementation)
    state = outer_state(model)
    per_layer = layer_states(model)
    for group in range(groups):
        members = [per_layer[i] for i in range(layers) if group_of(i, layers, groups) == group]
        chosen = members[:1] if init == "first" else members
        for key in members[0]:
            state[GROUP_PREFIX.format(group=group) + key] = torch.stack([m[key] for m in chosen]).mean(dim=0)
    target.load_state_dict(_matching(state, target, model), strict=True)
    return target


def _matching(state: dict[str, Tensor], target: nn.Module, source: nn.Module) -> dict[str, Tensor]:
    """`state` less a pooler the target class has no use for; a head the target lacks is refused in one line."""
    expected = set(target.state_dict())
    state = {k: v for k, v in state.items() if k in expected or not k.startswith("albert.pooler.")}
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        raise fail(f"{type(source).__name__} does not map onto {type(target).__name__} (first unmatched weight: "
                   f"{(missing or extra)[0]})", "give config.problem_type the task the model's head was trained for")
    return state
