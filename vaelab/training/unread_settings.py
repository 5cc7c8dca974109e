"""Refuse settings a new run would save and never read.

``--mixture-components 5`` with a Bernoulli likelihood, ``--iwae-samples 50`` with the ELBO or
``--lr-min`` with a constant learning rate change nothing, yet config.json would record them and a user
would believe the run used them. Each registry entry (likelihood, architecture, objective) declares in
``reads`` the settings only it reads; the rest are rules of the config itself. The check runs on new runs
only, once ``auto`` is resolved and the data have set the condition, so that runs saved before it keep
loading and resuming.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import fields
from typing import Any

from vaelab.bounds.objectives import OBJECTIVES
from vaelab.config import ConfigError, RunConfig
from vaelab.models.likelihoods import LIKELIHOODS
from vaelab.models.networks import ARCHITECTURES


def _defaults(section: Any) -> dict[str, Any]:
    return {f.name: f.default for f in fields(section)}


def _registry_rules(kind: str, flag: str, chosen: str, registry: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(setting, why) for every setting some entry of ``registry`` reads but ``chosen`` does not."""
    readers: dict[str, list[str]] = {}
    for name, entry in registry.items():
        for setting in entry.reads:
            readers.setdefault(setting, []).append(name)
    for setting, names in readers.items():
        if chosen not in names:
            yield setting, f"only --{flag} {' or '.join(names)} reads it, and this run's {kind} is {chosen}"


def check_unread_settings(config: RunConfig) -> None:
    """Raise :class:`ConfigError` naming the first setting changed from its default that this run never reads."""
    model, train = config.model, config.train
    rules = [
        *_registry_rules("likelihood", "likelihood", model.likelihood, LIKELIHOODS),
        *_registry_rules("architecture", "arch", model.arch, ARCHITECTURES),
        *_registry_rules("objective", "objective", train.objective, OBJECTIVES),
    ]
    if train.lr_schedule != "cosine":
        rules.append(("lr_min", f"only --lr-schedule cosine reads it, and this run's schedule is {train.lr_schedule}"))
    if model.stochastic_layers == 1:
        rules.append(("hierarchy", "it connects stochastic layers, and this run has one (add --stochastic-layers 2)"))
    if not model.infer_missing:
        rules.append(("alpha", "it weights the classifier of missing covariates, and this run's data have none missing"))
    if not (model.infer_missing and model.condition == "label"):
        rules.append(("classifier", "only M2 (labels, some missing) has a classifier q(y|x), and this run is not M2"))
    values = {**vars(model), **vars(train)}
    defaults = {**_defaults(type(model)), **_defaults(type(train))}
    for setting, why in rules:
        if values[setting] != defaults[setting]:
            raise ConfigError(setting, f"{why} (leave it at {defaults[setting]})")
