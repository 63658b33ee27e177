"""The custom interpolations of the recipe files (alembert/conf/recipe/*.yaml), as plain functions.

`${one_minus:${kd.alpha}}` is the soft-target weight 1 - alpha; `${kd_params:${kd.soft_loss},${kd.temperature},
${kd.scale_by_t2}}` gives the KL term its temperature and T^2 scaling, and MSE on logits nothing. The base imports
no OmegaConf: each entry point that composes configs registers these with
`register_resolvers(OmegaConf.register_new_resolver)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def one_minus(value) -> float:
    return 1.0 - float(value)


def kd_params(loss, temperature, scale) -> dict[str, Any]:
    return {"temperature": float(temperature), "scale_by_t2": bool(scale)} if loss == "kd" else {}


RESOLVERS: dict[str, Callable[..., Any]] = {"one_minus": one_minus, "kd_params": kd_params}


def register_resolvers(register_new_resolver: Callable[..., Any]) -> None:
    """Register every resolver through `register_new_resolver` (OmegaConf's), replacing earlier registrations."""
    for name, fn in RESOLVERS.items():
        register_new_resolver(name, fn, replace=True)
