"""The BERT-family -> ALBERT converter that layer sharing and embedding factorization both build on.

Each family's entry says how its weights map (alembert.families.base.AlbertSource): a post-LayerNorm layer maps
one-to-one onto an ALBERT layer. With one group per layer and `embedding_hidden_mapping_in` set to the family's
embedding projection (ELECTRA's) or to the identity, the converted model computes exactly what the original
computed. A family without segment ids (DistilBERT) gets an all-zero segment table, which is exact too. RoBERTa numbers positions from padding_idx + 1:
the converter drops the unused leading rows of the position table, which is exact at every real token of
right-padded inputs (what the tokenizers produce); only a padding position's own output, which no task
reads, differs.

The ALBERT class is the one the model's task builds (alembert.tasks: AlbertForSequenceClassification,
AlbertForTokenClassification, and AlbertForQuestionAnswering for a span task), and the task head keeps its
weights under its own name (`classifier`, `qa_outputs`). RoBERTa's sequence head (dense, tanh, out_proj)
becomes ALBERT's pooler and classifier; a BERT pooler becomes ALBERT's, where the ALBERT class has one.
DistilBERT's (ReLU) and ELECTRA's (GELU) sequence heads have no exact ALBERT form: their dense layer becomes the
pooler and the classifier is refitted on task rows, with the logit error recorded (compress/albert_head.py).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from transformers import AlbertConfig, PreTrainedModel

from alembert.families import FAMILIES, HISTORY_KEY, entry, family, require_family, supporting
from alembert.errors import fail
from alembert.tasks import task_of
from compress.albert_head import needs_refit, refit_head


def supported() -> tuple[str, ...]:
    """The families the converter maps (each entry's `albert`), and ALBERT itself (regrouped)."""
    return (*supporting("albert"), "albert")


GROUP_PREFIX = "albert.encoder.albert_layer_groups.{group}.albert_layers.0."
INIT_MODES = ("mean", "first")


def group_of(layer: int, layers: int, groups: int) -> int:
    """ALBERT's own rule (AlbertTransformer.forward): contiguous blocks of layers share a group."""
    return int(layer / (layers / groups))


def _setting(cfg, key: str, default=None):
    """ALBERT's config `key` read from a family's config under the family's own name for it."""
    return getattr(cfg, FAMILIES[cfg.model_type].albert.config_keys.get(key, key), default)


def _albert_config(source, groups: int, embedding_size: int) -> AlbertConfig:
    cfg = source
    if cfg.model_type == "albert":
        config = copy.deepcopy(cfg)
        config.num_hidden_groups = groups
        return config
    hidden = _setting(cfg, "hidden_size")
    config = AlbertConfig(
        vocab_size=cfg.vocab_size, embedding_size=embedding_size, hidden_size=hidden,
        num_hidden_layers=_setting(cfg, "num_hidden_layers"), num_hidden_groups=groups, inner_group_num=1,
        num_attention_heads=_setting(cfg, "num_attention_heads"), intermediate_size=_setting(cfg, "intermediate_size"),
        hidden_act=_setting(cfg, "hidden_act"), hidden_dropout_prob=_setting(cfg, "hidden_dropout_prob"),
        attention_probs_dropout_prob=_setting(cfg, "attention_probs_dropout_prob"),
        max_position_embeddings=cfg.max_position_embeddings - FAMILIES[cfg.model_type].position_offset(cfg),
        type_vocab_size=_setting(cfg, "type_vocab_size", 2), initializer_range=cfg.initializer_range,
        layer_norm_eps=_setting(cfg, "layer_norm_eps", 1e-12),  # DistilBERT's LayerNorms are fixed at 1e-12
        classifier_dropout_prob=_setting(cfg, "classifier_dropout") or _setting(cfg, "hidden_dropout_prob"),
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
    names = entry(model).albert.layer_keys
    states = []
    for layer in model.base_model.get_submodule(entry(model).layers):
        module, weight = zip(*(key.rsplit(".", 1) for key in layer.state_dict()))
        states.append({f"{names[m]}.{w}": value for m, w, value in zip(module, weight, layer.state_dict().values())})
    return states


def outer_state(model: nn.Module) -> dict[str, Tensor]:
    """Embeddings, embedding->hidden mapping, pooler (where there is one) and task head under ALBERT's names."""
    state = model.state_dict()
    if family(model) == "albert":
        return {k: v for k, v in state.items() if not k.startswith("albert.encoder.albert_layer_groups.")}
    source = entry(model).albert
    prefix = model.base_model_prefix
    embeddings = f"{prefix}.embeddings."
    offset = entry(model).position_offset(model.config)
    out = {f"albert.embeddings.{name}": state[embeddings + name]
           for name in ("word_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias")}
    out["albert.embeddings.position_embeddings.weight"] = state[embeddings + "position_embeddings.weight"][offset:]
    words = out["albert.embeddings.word_embeddings.weight"]
    out["albert.embeddings.token_type_embeddings.weight"] = (  # a family without segments reads none: zero rows are exact
        state[embeddings + "token_type_embeddings.weight"] if source.token_types else words.new_zeros(2, words.shape[1]))
    out.update(_embedding_mapping(state, f"{prefix}.{source.projection}." if source.projection else None,
                                  width=words.shape[1], hidden=_setting(model.config, "hidden_size")))
    pooler = f"{prefix}.pooler.dense."
    out.update({"albert.pooler." + key.removeprefix(pooler): value for key, value in state.items() if key.startswith(pooler)})
    out.update({_head_name(key, source.head): value for key, value in state.items() if not key.startswith(f"{prefix}.")})
    return out


def _embedding_mapping(state: dict[str, Tensor], projection: str | None, *, width: int, hidden: int) -> dict[str, Tensor]:
    """ALBERT's embedding -> hidden mapping: the family's own projection, where it has one; else the identity."""
    target = "albert.encoder.embedding_hidden_mapping_in."
    if projection is not None and projection + "weight" in state:
        return {target + "weight": state[projection + "weight"], target + "bias": state[projection + "bias"]}
    return {target + "weight": torch.eye(hidden, width), target + "bias": torch.zeros(hidden)}


def _head_name(key: str, renames) -> str:
    """A task-head key under ALBERT's name: kept as it is (classifier, qa_outputs), except a renamed sequence head."""
    for source, target in renames.items():
        if key.startswith(source):
            return target + key.removeprefix(source)
    return key


def to_albert(model: nn.Module, groups: int, init: str = "mean", *, batches=None) -> tuple[PreTrainedModel, dict]:
    """Convert (or regroup) `model` into an ALBERT model of the same task whose layers share weights in `groups` groups.

    init=mean starts each group from the average of its layers' weights; init=first from its first layer.
    Returns the model and what the history should say of a refitted head (empty when the head mapped exactly):
    a sequence head with another activation than tanh is refitted on `batches` (compress/albert_head.py).
    """
    require_family(model, supported(), "ALBERT conversion (share_layers / factorize_embeddings)")
    if init not in INIT_MODES:
        raise fail(f"share_layers.init={init} is unknown", f"use one of {', '.join(INIT_MODES)}")
    layers = model.config.num_hidden_layers
    if not 1 <= groups <= layers:
        raise fail(f"share_layers.groups={groups} must be between 1 and the model's {layers} layers", f"pick 1..{layers}")
    state = outer_state(model)
    width = state["albert.embeddings.word_embeddings.weight"].shape[1]
    target = task_of(model.config).model_class.from_config(_albert_config(model.config, groups, width)).eval()
    if hasattr(model.config, "_attn_implementation"):
        target.set_attn_implementation(model.config._attn_implementation)
    per_layer = layer_states(model)
    for group in range(groups):
        members = [per_layer[i] for i in range(layers) if group_of(i, layers, groups) == group]
        chosen = members[:1] if init == "first" else members
        for key in members[0]:
            state[GROUP_PREFIX.format(group=group) + key] = torch.stack([m[key] for m in chosen]).mean(dim=0)
    target.load_state_dict(_matching(state, target, model), strict=True)
    if family(model) == "albert" or not needs_refit(model, entry(model).albert):
        return target, {}
    return target, refit_head(model, target, batches, activation=entry(model).albert.head_activation)


def _matching(state: dict[str, Tensor], target: nn.Module, source: nn.Module) -> dict[str, Tensor]:
    """`state` less a pooler the target class has no use for; a head the target lacks is refused in one line."""
    expected = set(target.state_dict())
    state = {k: v for k, v in state.items() if k in expected or not k.startswith("albert.pooler.")}
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        raise fail(f"{type(source).__name__} does not map onto {type(target).__name__} (first unmatched weight: "
                   f"{(missing or extra)[0]})", "give config.problem_type the task the model's head was trained for")
    return state
