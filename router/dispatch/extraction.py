"""The extraction stage: ask the configured model for a skill's parameters under structured output.

The prompt's system part (instructions, the skill's description and JSON schema) is static per
skill, so providers can cache it. An answer that is not valid JSON or fails the schema gets one
re-ask that quotes the validation errors; a second failure is ``InvalidParameters``.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from pydantic import BaseModel, ValidationError

from router.dispatch.providers import ChatRequest, Message
from router.dispatch.skills import Skill
from router.errors import InvalidParameters


@functools.cache
def params_schema(params: type[BaseModel]) -> dict[str, Any]:
    return params.model_json_schema()


@functools.cache
def system_prompt(skill: Skill) -> str:
    """Built once per skill: byte-identical on every call, which is what prompt caches key on."""
    schema = json.dumps(params_schema(skill.params), sort_keys=True)
    return (
        f"You extract the parameters of the skill `{skill.name}` from a user's message.\n"
        f"Skill: {skill.description}\n"
        "Answer with one JSON object matching this JSON schema and nothing else. Use only what the "
        f"message says; leave out optional fields it does not mention.\nSchema: {schema}"
    )


def describe_errors(exc: ValidationError) -> list[str]:
    out = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(object)"
        got = "" if e["type"] == "missing" else f" (got {e['input']!r})"
        out.append(f"{where}: {e['msg']}{got}")
    return out


def validate_params(skill: Skill, raw: Any) -> BaseModel:
    """Caller-given parameters: validated, never re-asked."""
    try:
        return skill.params.model_validate(raw)
    except ValidationError as exc:
        raise InvalidParameters(skill.name, "parameters fail the skill's schema", describe_errors(exc)) from None


def parse_answer(skill: Skill, text: str) -> tuple[BaseModel | None, list[str]]:
    try:
        raw = json.loads(text)
    except ValueError:
        return None, [f"the answer is not JSON: {text[:120]!r}"]
    try:
        return skill.params.model_validate(raw), []
    except ValidationError as exc:
        return None, describe_errors(exc)


def first_request(skill: Skill, text: str) -> ChatRequest:
    return ChatRequest(system=system_prompt(skill), messages=(Message("user", text),),
                       json_schema=params_schema(skill.params), schema_name=f"{skill.name}_params")


def reask_request(first: ChatRequest, answer: str, errors: list[str]) -> ChatRequest:
    correction = ("That answer fails validation: " + "; ".join(errors)
                  + ". Answer again with only the corrected JSON object.")
    return ChatRequest(system=first.system,
                       messages=(*first.messages, Message("assistant", answer), Message("user", correction)),
                       json_schema=first.json_schema, schema_name=first.schema_name)
