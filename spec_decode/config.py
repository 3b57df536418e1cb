"""Every knob of the run config checked in one table, whether or not the chosen methods use it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from spec_decode.sampling import Sampling

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # the one Hydra config tree (runs and reports read it)


class ConfigError(ValueError):
    """The configuration asks for something invalid; the message says what."""


@dataclass(frozen=True)
class Knob:
    """A value's type (int, float or bool), its closed range, and whether null is allowed."""

    kind: type
    least: float | None = None
    most: float | None = None
    nullable: bool = False

    def problem(self, value) -> str | None:
        """What is wrong with `value` for this knob, or None."""
        if value is None and self.nullable:
            return None
        if not _is(value, self.kind) or (self.kind is float and not math.isfinite(value)):
            return f"must be {self._describe()}, got {value!r}"
        if (self.least is not None and value < self.least) or (self.most is not None and value > self.most):
            return f"must be {self._describe()}, got {value!r}"
        return None

    def _describe(self) -> str:
        what = {int: "an integer", float: "a number", bool: "true or false"}[self.kind]
        if self.least is not None and self.most is not None:
            what += f" in [{self.least}, {self.most}]"
        elif self.least is not None:
            what += f" >= {self.least}"
        return what + (" or null" if self.nullable else "")


# Top-level knobs (dotted for nested ones); every run config must carry them.
KNOBS: dict[str, Knob] = {
    "k": Knob(int, 1), "depth": Knob(int, 1), "branch": Knob(int, 1), "threshold": Knob(float, 0, 1),
    "max_nodes": Knob(int, 1), "cache_size": Knob(int, 1),
    "max_new_tokens": Knob(int, 1), "num_prompts": Knob(int, 1, nullable=True), "repeats": Knob(int, 1),
    "warmup": Knob(int, 0),
    "seed": Knob(int, 0), "threads": Knob(int, 1, nullable=True), "trace_rounds": Knob(int, 0),
    "profile": Knob(bool), "interleave": Knob(bool), "overwrite": Knob(bool), "static_cache": Knob(bool),
    "compile": Knob(bool), "busy_threshold": Knob(float, 0), "strict_quiet": Knob(bool),
    "temperature": Knob(float, 0), "top_p": Knob(float, 0, 1), "top_k": Knob(int, 0), "batch_size": Knob(int, 1),
}
# Checked where present (added by other parts of the harness, or optional in a group's file; text prompt sets have
# min_tokens / max_tokens, conversation sets per_category).
OPTIONAL: dict[str, Knob] = {
    "model.trust_remote_code": Knob(bool),
    "dataset.min_tokens": Knob(int, 1), "dataset.max_tokens": Knob(int, 1),
    "dataset.per_category": Knob(int, 1, nullable=True),
}
# Method knobs that share a top-level knob's rules, checked in every method entry that sets them.
METHOD_KNOBS = ("k", "depth", "branch", "threshold", "max_nodes", "cache_size")


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first knob that is missing, of the wrong type or out of range."""
    for key, knob in KNOBS.items():
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if value is _MISSING:
            raise ConfigError(f"{key} is missing from the config")
        _check(key, value, knob)
    for key, knob in OPTIONAL.items():
        value = OmegaConf.select(cfg, key, default=_MISSING)
        if value is not _MISSING:
            _check(key, value, knob)
    try:
        Sampling.validate(cfg.temperature, cfg.top_p, cfg.top_k)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if cfg.dataset.get("min_tokens", 0) > cfg.dataset.get("max_tokens", math.inf):
        raise ConfigError(f"dataset.min_tokens ({cfg.dataset.min_tokens}) must not exceed "
                          f"dataset.max_tokens ({cfg.dataset.max_tokens})")


def check_method_knobs(label: str, params: Mapping) -> None:
    """Raise ConfigError when a method entry sets a shared knob (k, depth, ...) to a bad value."""
    for key in METHOD_KNOBS:
        if key in params and params[key] is not None:
            problem = KNOBS[key].problem(params[key])
            if problem:
                raise ConfigError(f"method {label!r}: {key} {problem}")


def check_knob(key: str, value) -> None:
    """Raise ConfigError when a top-level knob's value is of the wrong type or out of range."""
    _check(key, value, KNOBS[key])


def _check(key: str, value, knob: Knob) -> None:
    problem = knob.problem(value)
    if problem:
        raise ConfigError(f"{key} {problem}")


def _is(value, kind: type) -> bool:
    """Strict types: a bool is not an int, a string is never a number; an int is a float."""
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if kind is int else isinstance(value, (int, float))


_MISSING = object()
