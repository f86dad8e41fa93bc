"""``FakeGemini``: a loopback Gemini server (``generateContent`` and ``streamGenerateContent``). It checks
requests as Google does (x-goog-api-key, unknown fields, contents and parts, functionDeclarations,
toolConfig, function call/response turns), answers text or scripted ``functionCall`` parts, streams
GenerateContentResponse objects (SSE with ``alt=sse``, else one JSON array), and errors with
google.rpc status bodies.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from router.testing._loopback import ApiError, Event, LoopbackServer, object_body, pieces, sse

_PATH = re.compile(r"^/v1beta/models/([\w.\-]+):(generateContent|streamGenerateContent)$")
_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:\-]{0,63}$")
_DATA = {"text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
         "codeExecutionResult"}
_DECLARATION = {"name", "description", "parameters", "parametersJsonSchema", "response", "responseJsonSchema",
                "behavior"}
_TOOLS = {"functionDeclarations", "googleSearch", "googleSearchRetrieval", "codeExecution", "urlContext"}
_MODES = {"AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"}


def _bad(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def _text(content: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for p in content["parts"])


def _calls(content: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [p[kind] for p in content["parts"] if kind in p]


def _check_part(part: Any, where: str, role: str) -> None:
    data = sorted(set(part) & _DATA) if isinstance(part, dict) else []
    if len(data) != 1:
        raise _bad(f"* GenerateContentRequest.{where}.data: required oneof field 'data' must have one initialized "
                   "field")
    if unknown := sorted(set(part) - _DATA - {"thought", "thoughtSignature"}):
        raise _bad(f'Invalid JSON payload received. Unknown name "{unknown[0]}" at \'{where}\': Cannot find field.')
    kind, value = data[0], part[data[0]]
    if kind == "text" and not isinstance(value, str):
        raise _bad(f"Invalid value at '{where}.text' (TYPE_STRING)")
    if kind in {"functionCall", "functionResponse"}:
        field = "args" if kind == "functionCall" else "response"
        if role != ("model" if kind == "functionCall" else "user"):
            raise _bad(f"* GenerateContentRequest.{where}: {kind} parts belong to a "
                       f"{'model' if kind == 'functionCall' else 'user'} turn")
        if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
            raise _bad(f"* GenerateContentRequest.{where}.{kind}.name: Name cannot be empty.")
        if not isinstance(value.get(field, {}), dict) or (kind == "functionResponse" and field not in value):
            raise _bad(f"* GenerateContentRequest.{where}.{kind}.{field}: must be an object")
        if unknown := sorted(set(value) - {"name", field, "id", "willContinue", "scheduling", "parts"}):
            raise _bad(f'Invalid JSON payload received. Unknown name "{unknown[0]}" at \'{where}.{kind}\': Cannot '
                       "find field.")


def _check_contents(contents: Any) -> None:
    if not isinstance(contents, list) or not contents:
        raise _bad("* GenerateContentRequest.contents: contents is not specified")
    for i, c in enumerate(contents):
        if not isinstance(c, dict) or c.get("role") not in {"user", "model"} or not isinstance(
                c.get("parts"), list) or not c["parts"]:
            raise _bad(f"* GenerateContentRequest.contents[{i}]: role must be user or model, with parts")
        for j, part in enumerate(c["parts"]):
            _check_part(part, f"contents[{i}].parts[{j}]", c["role"])
        # Google's own words: a function response turn right after the call turn, one response per call.
        responses = _calls(c, "functionResponse")
        if responses:
            asked = _calls(contents[i - 1], "functionCall") if i else []
            if not asked:
                raise _bad("Please ensure that function response turn comes immediately after a function call turn.")
            if len(responses) != len(asked):
                raise _bad("Please ensure that the number of function response parts is equal to the number of "
                           "function call parts of the function call turn.")


def _check_tools(body: dict[str, Any]) -> set[str]:
    """The declared function names, after checking ``tools`` and ``toolConfig``."""
    names: set[str] = set()
    tools = body.get("tools", [])
    if not isinstance(tools, list):
        raise _bad("Invalid JSON payload received. Unknown name \"tools\": expected a list.")
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or (unknown := sorted(set(tool) - _TOOLS)):
            name = unknown[0] if isinstance(tool, dict) else "tools"
            raise _bad(f"Invalid JSON payload received. Unknown name \"{name}\" at 'tools[{i}]': Cannot find field.")
        for j, decl in enumerate(tool.get("functionDeclarations", [])):
            where = f"tools[{i}].function_declarations[{j}]"
            if not isinstance(decl, dict):
                raise _bad(f"* GenerateContentRequest.{where}: must be an object")
            if unknown := sorted(set(decl) - _DECLARATION):
                raise _bad(f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at '{where}': Cannot find "
                           "field.")
            if not isinstance(decl.get("name"), str) or not _NAME.match(decl["name"]):
                raise _bad(f"* GenerateContentRequest.{where}.name: Invalid function name. Must start with a letter "
                           "or an underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons "
                           "(:), or dashes (-), with a maximum length of 64.")
            if "parameters" in decl and "parametersJsonSchema" in decl:
                raise _bad(f"* GenerateContentRequest.{where}: parameters and parameters_json_schema are mutually "
                           "exclusive")
            for key in ("parameters", "parametersJsonSchema"):
                if key in decl and not isinstance(decl[key], dict):
                    raise _bad(f"* GenerateContentRequest.{where}.{key}: must be an object")
            names.add(decl["name"])
    config = body.get("toolConfig")
    if config is not None:
        fcc = config.get("functionCallingConfig", {}) if isinstance(config, dict) else None
        if not isinstance(fcc, dict) or set(config) - {"functionCallingConfig", "retrievalConfig"}:
            raise _bad("Invalid JSON payload received. Unknown name at 'tool_config': Cannot find field.")
        mode = fcc.get("mode", "AUTO")
        if mode not in _MODES:
            raise _bad(f"Invalid value at 'tool_config.function_calling_config.mode' (type.googleapis.com/"
                       f"google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), {json.dumps(mode)}")
        allowed = fcc.get("allowedFunctionNames")
        if allowed is not None and (mode not in {"ANY", "VALIDATED"} or not isinstance(allowed, list)):
            raise _bad("* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
                       "allowed_function_names may only be set when mode is ANY")
        if allowed and (stray := [n for n in allowed if n not in names]):
            raise _bad("* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
                       f"unknown function {stray[0]!r}")
    return names


class FakeGemini(LoopbackServer):
    """``/v1beta/models/{model}:generateContent`` and ``:streamGenerateContent``: x-goog-api-key; errors
    carry google.rpc status.

    The query for scripts is the last user content with text (then the first). With functions declared
    and mode not NONE, scripted tool calls answer as ``functionCall`` parts (finishReason STOP; an ``id``
    on each only when ``send_call_ids``); mode ANY with ``allowedFunctionNames`` limits them. Streams:
    text pieces and each function call whole, one GenerateContentResponse per event, the last with
    finishReason and usageMetadata; ``alt=sse`` frames them as ``data:`` events ``\\r\\n\\r\\n`` apart, else
    they go out as one JSON array (chunked).
    """

    _STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
               429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
    _FIELDS = {"contents", "systemInstruction", "generationConfig", "safetySettings", "tools", "toolConfig",
               "cachedContent"}
    _CONFIG = {"temperature", "maxOutputTokens", "topP", "topK", "candidateCount", "stopSequences",
               "responseMimeType", "responseSchema", "responseJsonSchema", "thinkingConfig", "seed"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.send_call_ids = False  # the classic API gives a functionCall no id; newer models send one

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_body(self, status: int, kind: str, message: str, param: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"code": status, "message": message, "status": self._STATUS.get(status, "UNKNOWN")}
        if kind == "rate_limit":
            error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                 "retryDelay": f"{self.retry_after}s"}]
        return {"error": error}

    def fault_error(self, kind: str) -> ApiError:
        err = super().fault_error(kind)
        err.headers = {}  # Gemini says how long to wait in the body (RetryInfo), not in a header
        return err

    def strip_usage(self, payload: dict[str, Any]) -> None:
        payload.pop("usageMetadata", None)

    def wants_stream(self, path: str, body: Any) -> bool:
        return urlsplit(path).path.endswith(":streamGenerateContent")

    @staticmethod
    def _sse(path: str) -> bool:
        return parse_qs(urlsplit(path).query).get("alt") == ["sse"]

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[dict[str, Any], str]:
        match = _PATH.match(urlsplit(path).path)
        if not match:
            raise ApiError(404, "invalid_request", f"Method not found: {path}")
        if not headers.get("x-goog-api-key"):
            raise ApiError(403, "authentication", "Method doesn't allow unregistered callers. Please use an API key.")
        if headers["x-goog-api-key"] != self.api_key:
            raise _bad("API key not valid. Please pass a valid API key.")
        body = object_body(body, self._FIELDS, "Invalid JSON payload received.",
                           'Invalid JSON payload received. Unknown name "{}"')
        contents = body.get("contents")
        _check_contents(contents)
        config = body.get("generationConfig", {})
        if unknown := sorted(set(config) - self._CONFIG):
            raise _bad(f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at 'generation_config'")
        structured = "responseJsonSchema" in config or "responseSchema" in config
        if structured and config.get("responseMimeType") != "application/json":
            raise _bad("responseMimeType must be application/json with a response schema")
        names = _check_tools(body)
        model = match.group(1)
        system = "".join(p.get("text", "") for p in (body.get("systemInstruction") or {}).get("parts", []))
        users = [i for i, c in enumerate(contents) if c["role"] == "user" and _text(c)]
        queries = [_text(contents[i]) for i in (users[-1:] + users[:1])] or [""]
        calls = self._scripted_calls(model, body, names, queries, contents[users[-1] + 1:] if users else [])
        if calls:
            parts: list[dict[str, Any]] = [
                {"functionCall": {"name": name, "args": args} | ({"id": self.call_id("call")}
                                                                 if self.send_call_ids else {})}
                for name, args in calls]
            answer = json.dumps(calls)
        else:
            answer = self.answer_for(model, queries, "{}" if structured else "ok")
            parts = [{"text": answer}]
        prompt = " ".join(p.get("text", "") for c in contents for p in c["parts"])
        fresh, cached, out = self.usage_counts(system, prompt, answer)
        return {
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": fresh + cached, "cachedContentTokenCount": cached,
                              "candidatesTokenCount": out, "totalTokenCount": fresh + cached + out},
            "modelVersion": model, "responseId": f"resp-{len(self.requests)}",
        }, model

    def _scripted_calls(self, model: str, body: dict[str, Any], names: set[str], queries: list[str],
                        after_user: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        fcc = (body.get("toolConfig") or {}).get("functionCallingConfig", {})
        if not names or fcc.get("mode") == "NONE":
            return []
        allowed = set(fcc.get("allowedFunctionNames") or names)
        round_ = sum(1 for c in after_user if c["role"] == "model" and _calls(c, "functionCall"))
        return self.tool_calls_for(model, queries, round_, allowed)

    # -- streaming ---------------------------------------------------------------------------------------
    def stream_media_type(self, path: str) -> str:
        return "text/event-stream" if self._sse(path) else "application/json"

    def _frame(self, path: str, objects: list[tuple[dict[str, Any], bool]]) -> list[Event]:
        if self._sse(path):
            return [sse(obj, sep="\r\n\r\n", content=content) for obj, content in objects]
        # Without alt=sse Google sends one JSON array, element by element.
        events = [Event(("[" if i == 0 else ",\r\n").encode() + json.dumps(obj).encode(), content)
                  for i, (obj, content) in enumerate(objects)]
        return [*events, Event(b"]")]

    def stream_events(self, path: str, body: dict[str, Any], payload: dict[str, Any]) -> list[Event]:
        candidate = payload["candidates"][0]
        parts: list[dict[str, Any]] = []
        for part in candidate["content"]["parts"]:
            parts += [{"text": t} for t in pieces(part["text"], self.stream_chunks)] if "text" in part else [part]
        parts = parts or [{"text": ""}]
        meta = {"modelVersion": payload["modelVersion"], "responseId": payload["responseId"]}
        objects = []
        for i, part in enumerate(parts):
            obj: dict[str, Any] = {"candidates": [{"content": {"role": "model", "parts": [part]}, "index": 0}], **meta}
            if i == len(parts) - 1:
                obj["candidates"][0]["finishReason"] = candidate["finishReason"]
                if "usageMetadata" in payload:
                    obj["usageMetadata"] = payload["usageMetadata"]
            objects.append((obj, True))
        return self._frame(path, objects)

    def stream_error_event(self, path: str, err: ApiError) -> Event:
        body = self.error_body(err.status, err.kind, "The model is overloaded. Please try again later.")
        return (sse(body, sep="\r\n\r\n") if self._sse(path)
                else Event(b",\r\n" + json.dumps(body).encode() + b"]"))
