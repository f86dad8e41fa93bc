"""``FakeOpenAI``: a loopback OpenAI chat-completions server. It checks requests as OpenAI does (Bearer key,
unknown fields, structured output, tools, tool turns, stream options), answers text or scripted tool
calls, streams ``chat.completion.chunk`` events, and errors in OpenAI's body with the ``param`` at fault.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from router.testing._loopback import ApiError, Event, LoopbackServer, object_body, pieces, sse

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_ROLES = ("system", "developer", "user", "assistant", "tool")
_MESSAGE_KEYS = {"role", "content", "name", "tool_calls", "tool_call_id", "refusal", "audio", "function_call"}
_USER_PARTS = {"text", "image_url", "input_audio", "file"}


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, "invalid_request", message, param=param)


def _content_text(content: Any) -> str:
    """A message's text: the string, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _check_content(i: int, m: dict[str, Any]) -> None:
    where = f"messages[{i}].content"
    content = m.get("content")
    if content is None:
        if m["role"] == "assistant" and m.get("tool_calls"):
            return  # an assistant turn that only calls tools carries no text
        raise _bad(where, f"Invalid value for 'content': expected a string, got null. ('{where}')")
    if isinstance(content, str):
        return
    if not isinstance(content, list) or not content:
        raise _bad(where, f"Invalid '{where}': expected a string or a non-empty array of content parts.")
    allowed = _USER_PARTS if m["role"] == "user" else {"text", "refusal"} if m["role"] == "assistant" else {"text"}
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed:
            raise _bad(f"{where}[{j}].type", f"Invalid value: {kind!r}. Supported values are: "
                                             f"{', '.join(repr(a) for a in sorted(allowed))}.")
        if kind == "text" and not isinstance(part.get("text"), str):
            raise _bad(f"{where}[{j}].text", f"Missing required parameter: '{where}[{j}].text'.")


def _check_tool_calls(i: int, calls: Any) -> list[str]:
    where = f"messages[{i}].tool_calls"
    if not isinstance(calls, list) or not calls:
        raise _bad(where, f"Invalid '{where}': empty array. Expected an array with minimum length 1.")
    ids = []
    for j, call in enumerate(calls):
        at = f"{where}[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or not isinstance(call.get("id"), str) or call.get("type") != "function":
            raise _bad(at, f"Invalid '{at}': expected an object with an 'id' and type 'function'.")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _bad(f"{at}.function.name", f"Missing required parameter: '{at}.function.name'.")
        if not isinstance(fn.get("arguments"), str):
            raise _bad(f"{at}.function.arguments", f"Missing required parameter: '{at}.function.arguments'.")
        ids.append(call["id"])
    return ids


def _check_messages(messages: Any) -> None:
    """Roles, content shapes, and the tool protocol: every assistant tool call answered by the tool
    messages right after it, and no tool message without such a call."""
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "'messages' must be a non-empty array of {role, content}.")
    open_ids: set[str] = set()
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            role = m.get("role") if isinstance(m, dict) else None
            raise _bad(f"messages[{i}].role", f"Invalid value: {role!r}. Supported values are: 'system', "
                                              "'assistant', 'user', 'function', 'tool', and 'developer'.")
        if unknown := sorted(set(m) - _MESSAGE_KEYS):
            raise _bad(f"messages[{i}].{unknown[0]}", f"Unknown parameter: 'messages[{i}].{unknown[0]}'.")
        if m["role"] != "tool" and open_ids:
            raise _bad(f"messages.[{i - 1}].role", "An assistant message with 'tool_calls' must be followed by "
                       "tool messages responding to each 'tool_call_id'. The following tool_call_ids did not "
                       f"have response messages: {', '.join(sorted(open_ids))}")
        _check_content(i, m)
        if m["role"] == "tool":
            if not isinstance(m.get("tool_call_id"), str):
                raise _bad(f"messages[{i}].tool_call_id", f"Missing required parameter: 'messages[{i}].tool_call_id'.")
            if m["tool_call_id"] not in open_ids:
                raise _bad(f"messages.[{i}].role", "Invalid parameter: messages with role 'tool' must be a "
                                                   "response to a preceeding message with 'tool_calls'.")
            open_ids.discard(m["tool_call_id"])
        elif m["role"] == "assistant" and "tool_calls" in m:
            open_ids = set(_check_tool_calls(i, m["tool_calls"]))
    if open_ids:
        raise _bad(f"messages.[{len(messages) - 1}].role", "An assistant message with 'tool_calls' must be "
                   "followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did "
                   f"not have response messages: {', '.join(sorted(open_ids))}")


def _check_tools(body: dict[str, Any]) -> set[str]:
    """The offered function names, after checking ``tools``, ``tool_choice`` and ``parallel_tool_calls``."""
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list) or not tools:
            raise _bad("tools", "Invalid 'tools': empty array. Expected an array with minimum length 1, but got an "
                                "empty array instead.")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type") != "function":
                raise _bad(f"tools[{i}].type", f"Invalid value for 'tools[{i}].type': expected 'function'.")
            fn = tool.get("function")
            if not isinstance(fn, dict):
                raise _bad(f"tools[{i}].function", f"Missing required parameter: 'tools[{i}].function'.")
            if unknown := sorted(set(fn) - {"name", "description", "parameters", "strict"}):
                raise _bad(f"tools[{i}].function.{unknown[0]}",
                           f"Unknown parameter: 'tools[{i}].function.{unknown[0]}'.")
            if not isinstance(fn.get("name"), str) or not _NAME.match(fn["name"]):
                raise _bad(f"tools[{i}].function.name", f"Invalid 'tools[{i}].function.name': string does not match "
                                                        "pattern. Expected a string that matches the pattern "
                                                        "'^[a-zA-Z0-9_-]+$'.")
            if "parameters" in fn and not isinstance(fn["parameters"], dict):
                raise _bad(f"tools[{i}].function.parameters", f"Invalid type for 'tools[{i}].function.parameters': "
                                                              "expected an object.")
            if "strict" in fn and not isinstance(fn["strict"], bool):
                raise _bad(f"tools[{i}].function.strict", f"Invalid type for 'tools[{i}].function.strict': "
                                                          "expected a boolean.")
            names.add(fn["name"])
    for field in ("tool_choice", "parallel_tool_calls"):
        if field in body and tools is None:
            raise _bad(field, f"Invalid value for '{field}': '{field}' is only allowed when 'tools' are specified.")
    if "parallel_tool_calls" in body and not isinstance(body["parallel_tool_calls"], bool):
        raise _bad("parallel_tool_calls", "Invalid type for 'parallel_tool_calls': expected a boolean.")
    choice = body.get("tool_choice")
    if choice is not None and choice not in ("auto", "none", "required"):
        fn = choice.get("function") if isinstance(choice, dict) else None
        if not isinstance(choice, dict) or choice.get("type") != "function" or not isinstance(fn, dict):
            raise _bad("tool_choice", "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or "
                                      "{type: function, function: {name}}.")
        if fn.get("name") not in names:
            raise _bad("tool_choice", f"Invalid value for 'tool_choice': no function named {fn.get('name')!r} "
                                      "in 'tools'.")
    return names


def _check_options(body: dict[str, Any]) -> None:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream", "Invalid type for 'stream': expected a boolean.")
    options = body.get("stream_options")
    if options is not None:
        if stream is not True:
            raise _bad("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
        if not isinstance(options, dict) or set(options) - {"include_usage", "include_obfuscation"} or not all(
                isinstance(v, bool) for v in options.values()):
            raise _bad("stream_options", "Invalid 'stream_options': expected {include_usage: boolean}.")
    top_p = body.get("top_p")
    if top_p is not None and (not isinstance(top_p, int | float) or isinstance(top_p, bool) or not 0 <= top_p <= 1):
        raise _bad("top_p", f"Invalid 'top_p': expected a number between 0 and 1, but got {top_p!r} instead.")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and 0 < len(stop) <= 4 and all(isinstance(s, str) for s in stop)):
        raise _bad("stop", "Invalid 'stop': expected a string or an array of at most 4 strings.")


class FakeOpenAI(LoopbackServer):
    """``/v1/chat/completions``. ``compatible=True`` acts as vLLM/llama.cpp: no key, max_tokens allowed.

    The query for scripts is the last user message's text (then the first). With tools offered and
    ``tool_choice`` not "none", scripted tool calls answer as ``message.tool_calls`` (ids ``call_<n>``,
    content null, finish_reason "tool_calls"). ``stream: true`` answers chunks: the role, the text in word
    pieces or each tool call (id and name, then argument pieces), the finish_reason, a ``choices: []``
    usage chunk when ``stream_options.include_usage`` (every chunk then has ``usage: null``), ``[DONE]``.
    """

    _FIELDS = {"model", "messages", "max_completion_tokens", "max_tokens", "temperature", "top_p", "n", "stop",
               "response_format", "seed", "user", "stream", "stream_options", "reasoning_effort", "store",
               "metadata", "tools", "tool_choice", "parallel_tool_calls"}
    _KINDS = {"rate_limit": "rate_limit_exceeded", "quota": "insufficient_quota", "overloaded": "server_error",
              "server": "server_error", "invalid_request": "invalid_request_error",
              "authentication": "invalid_request_error"}

    def __init__(self, *args: Any, compatible: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.compatible = compatible

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def error_body(self, status: int, kind: str, message: str, param: str | None = None) -> dict[str, Any]:
        code = {"quota": "insufficient_quota", "authentication": "invalid_api_key"}.get(kind)
        if code is None and param is not None:
            code = "invalid_value"
        return {"error": {"message": message, "type": self._KINDS.get(kind, "invalid_request_error"),
                          "param": param, "code": code}}

    def strip_usage(self, payload: dict[str, Any]) -> None:
        payload.pop("usage", None)

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> tuple[dict[str, Any], str]:
        if path != "/v1/chat/completions":
            raise ApiError(404, "invalid_request", f"Invalid URL (POST {path})")
        if not self.compatible and headers.get("authorization") != f"Bearer {self.api_key}":
            raise ApiError(401, "authentication", "Incorrect API key provided.")
        body = object_body(body, self._FIELDS, "The request body must be a JSON object.",
                           "Unrecognized request argument supplied: {}")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _bad("model", "you must provide a model parameter")
        if not self.compatible and "max_tokens" in body:
            raise _bad("max_tokens", "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                                     "'max_completion_tokens' instead.")
        messages = body.get("messages")
        _check_messages(messages)
        _check_options(body)
        names = _check_tools(body)
        fmt = body.get("response_format")
        if fmt is not None:
            ok = isinstance(fmt, dict) and (
                (fmt.get("type") == "json_schema" and isinstance(fmt.get("json_schema"), dict)
                 and isinstance(fmt["json_schema"].get("name"), str) and isinstance(fmt["json_schema"].get("schema"),
                                                                                    dict))
                or (self.compatible and fmt.get("type") == "json_object") or fmt.get("type") == "text")
            if not ok:
                raise _bad("response_format", "Invalid 'response_format': expected json_schema with a name and a "
                                              "schema.")
        system = "".join(_content_text(m["content"]) for m in messages if m["role"] in {"system", "developer"})
        users = [i for i, m in enumerate(messages) if m["role"] == "user" and _content_text(m["content"])]
        queries = [_content_text(messages[i]["content"]) for i in (users[-1:] + users[:1])] or [""]
        calls = self._scripted_calls(model, body, names, queries, messages[users[-1] + 1:] if users else [])
        message: dict[str, Any]
        if calls:
            message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
                {"id": self.call_id("call"), "type": "function",
                 "function": {"name": name, "arguments": json.dumps(args)}} for name, args in calls]}
            answer, finish = json.dumps(calls), "tool_calls"
        else:
            answer, finish = self.answer_for(model, queries, "{}" if fmt else "ok"), "stop"
            message = {"role": "assistant", "content": answer, "refusal": None}
        prompt = " ".join(_content_text(m.get("content")) for m in messages if m["role"] not in {"system", "developer"})
        fresh, cached, out = self.usage_counts(system, prompt, answer)
        return {
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": fresh + cached, "completion_tokens": out,
                      "total_tokens": fresh + cached + out, "prompt_tokens_details": {"cached_tokens": cached}},
        }, model

    def _scripted_calls(self, model: str, body: dict[str, Any], names: set[str], queries: list[str],
                        after_user: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        choice = body.get("tool_choice")
        if not names or choice == "none":
            return []
        allowed = {choice["function"]["name"]} if isinstance(choice, dict) else names
        round_ = sum(1 for m in after_user if m["role"] == "assistant" and m.get("tool_calls"))
        return self.tool_calls_for(model, queries, round_, allowed)

    # -- streaming ---------------------------------------------------------------------------------------
    def stream_events(self, path: str, body: dict[str, Any], payload: dict[str, Any]) -> list[Event]:
        include_usage = (body.get("stream_options") or {}).get("include_usage") is True
        base = {"id": payload["id"], "object": "chat.completion.chunk", "created": payload["created"],
                "model": payload["model"], "system_fingerprint": "fp_loopback"}

        def chunk(delta: dict[str, Any], finish: str | None = None, content: bool = True) -> Event:
            data = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            if include_usage:
                data["usage"] = None
            return sse(data, content=content)

        choice = payload["choices"][0]
        message, calls = choice["message"], choice["message"].get("tool_calls") or []
        events = [chunk({"role": "assistant", "content": None if calls else "", "refusal": None}, content=False)]
        events += [chunk({"content": piece}) for piece in pieces(message["content"] or "", self.stream_chunks)]
        for index, call in enumerate(calls):
            fn = call["function"]
            events.append(chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                                 "function": {"name": fn["name"], "arguments": ""}}]}))
            events += [chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                       for piece in pieces(fn["arguments"])]
        events.append(chunk({}, choice["finish_reason"], content=False))
        if include_usage and "usage" in payload:
            events.append(sse({**base, "choices": [], "usage": payload["usage"]}))
        return [*events, sse("[DONE]")]

    def stream_error_event(self, path: str, err: ApiError) -> Event:
        return sse(self.error_body(err.status, err.kind, err.message, err.param))
