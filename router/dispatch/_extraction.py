"""The extraction stage: ask the configured model for a skill's parameters under structured output.

The prompt's system part (instructions, the skill's description and JSON schema) is static per
skill, so providers can cache it. An answer that is not valid JSON or fails the schema gets one
re-ask that quotes the validation errors; a second failure is ``InvalidParameters``.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import pydantic_core
from pydantic import BaseModel, ValidationError

from router.dispatch._skills import Skill
from router.errors import InvalidParameters
from router.providers import ChatRequest, Message


def _closed(schema: Any) -> None:
    """Every object schema without its own ``additionalProperties`` gets ``false``: the schema says what strict
    validation enforces, and OpenAI's strict mode needs it."""
    if isinstance(schema, dict):
        if (schema.get("type") == "object" or "properties" in schema) and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for value in schema.values():
            _closed(value)
    elif isinstance(schema, list):
        for item in schema:
            _closed(item)


@functools.cache
def params_schema(skill: Skill) -> dict[str, Any]:
    schema = skill.params.model_json_schema()
    if skill.strict_params:
        _closed(schema)
    return schema


@functools.cache
def system_prompt(skill: Skill) -> str:
    """Built once per skill: byte-identical on every call, which is what prompt caches key on."""
    schema = json.dumps(params_schema(skill), sort_keys=True)
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


def _validate(skill: Skill, raw: Any) -> BaseModel:
    if not skill.strict_params:
        return skill.params.model_validate(raw)
    # Parameters are JSON (a request body, a model's answer, a stored approval): validated as JSON, strictly,
    # so a string may still be a date or an enum member, but `true` is never 1.0 and no unknown key passes.
    try:
        data = pydantic_core.to_json(raw)
    except pydantic_core.PydanticSerializationError as exc:
        raise InvalidParameters(skill.name, "parameters are not JSON", [str(exc)]) from None
    return skill.params.model_validate_json(data, strict=True, extra="forbid")


def validate_params(skill: Skill, raw: Any) -> BaseModel:
    """Caller-given parameters: validated, never re-asked."""
    try:
        return _validate(skill, raw)
    except ValidationError as exc:
        raise InvalidParameters(skill.name, "parameters fail the skill's schema", describe_errors(exc)) from None


def parse_answer(skill: Skill, text: str) -> tuple[BaseModel | None, list[str]]:
    try:
        raw = json.loads(text)
    except ValueError:
        return None, [f"the answer is not JSON: {text[:120]!r}"]
    try:
        return _validate(skill, raw), []
    except ValidationError as exc:
        return None, describe_errors(exc)
    except InvalidParameters as exc:
        return None, exc.errors


def first_request(skill: Skill, text: str) -> ChatRequest:
    return ChatRequest(system=system_prompt(skill), messages=(Message("user", text),),
                       json_schema=params_schema(skill), schema_name=f"{skill.name}_params")


def reask_request(first: ChatRequest, answer: str, errors: list[str]) -> ChatRequest:
    correction = ("That answer fails validation: " + "; ".join(errors)
                  + ". Answer again with only the corrected JSON object.")
    return ChatRequest(system=first.system,
                       messages=(*first.messages, Message("assistant", answer), Message("user", correction)),
                       json_schema=first.json_schema, schema_name=first.schema_name)
