"""The allowlist of skills: each with a parameter schema, an async handler and a ``writes`` flag.

Only a registered skill can run. Parameters are validated against ``params`` before the
handler sees them, strictly by default: as JSON, with no type coercion (``true`` is not a number,
``"20"`` is not one either) and no keys the schema does not name, nested models included. A skill
opts out with ``strict_params=False``, and then the model's own config decides. A ``writes`` skill
waits for an explicit approval; the handler's result is checked against ``result`` and, where
``max_age_s`` is declared, for freshness (its ``as_of``).
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from router._registry import lookup
from router.errors import ConfigError, SkillNotAllowed


@dataclass(frozen=True)
class SkillContext:
    session_id: str
    skill: str
    text: str | None
    approval_id: str | None = None


Handler = Callable[[Any, SkillContext], Awaitable[Any]]


@dataclass(frozen=True)
class Skill:
    name: str
    description: str
    params: type[BaseModel]
    handler: Handler
    writes: bool = False
    result: type[BaseModel] | None = None
    max_age_s: float | None = None
    format_reply: bool = False
    strict_params: bool = True  # False, explicitly: pydantic's lax coercion, and extra keys as the model says

    def __post_init__(self) -> None:
        if self.max_age_s is not None:
            if self.max_age_s <= 0:
                raise ConfigError(f"skill {self.name!r}: max_age_s must be > 0, got {self.max_age_s}")
            if self.result is None or "as_of" not in self.result.model_fields:
                raise ConfigError(f"skill {self.name!r}: max_age_s needs a result model with an `as_of` field "
                                  "(the time its data was read)")


class SkillRegistry:
    def __init__(self, skills: list[Skill] | None = None) -> None:
        self._skills: dict[str, Skill] = {}
        for skill in skills or []:
            self.add(skill)

    def add(self, skill: Skill) -> Skill:
        if skill.name in self._skills:
            raise ConfigError(f"skill {skill.name!r} is registered twice")
        self._skills[skill.name] = skill
        return skill

    def skill(self, name: str, *, params: type[BaseModel], description: str = "", writes: bool = False,
              result: type[BaseModel] | None = None, max_age_s: float | None = None,
              format_reply: bool = False, strict_params: bool = True) -> Callable[[Handler], Handler]:
        """Decorator form: ``@registry.skill("transfer", params=TransferParams, writes=True)``."""

        def register(handler: Handler) -> Handler:
            self.add(Skill(name, description or (handler.__doc__ or name).strip(), params, handler, writes, result,
                           max_age_s, format_reply, strict_params))
            return handler

        return register

    def get(self, name: str) -> Skill:
        return lookup(self._skills, name, lambda known: SkillNotAllowed(
            f"skill {name!r} is not allowed: it is not registered; allowed skills: {known}"))

    def __contains__(self, name: object) -> bool:
        return name in self._skills

    def __iter__(self) -> Iterator[Skill]:
        return iter(self._skills.values())


def load_registry(spec: str) -> SkillRegistry:
    """``package.module:attribute`` naming a SkillRegistry (or a function returning one)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"skills: {spec!r} is not of the form package.module:registry")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"skills: cannot import module {module_name!r}: {exc}") from exc
    obj = getattr(module, attr, None)
    if callable(obj) and not isinstance(obj, SkillRegistry):
        obj = obj()
    if not isinstance(obj, SkillRegistry):
        raise ConfigError(f"skills: {spec!r} is {type(obj).__name__}, not a SkillRegistry")
    return obj
