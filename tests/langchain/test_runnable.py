"""The router through LangChain's own interface: DecisionRunnable (a Decision) and IntentRouter (a route per intent).

Everything runs against the real mini index; the routes are RunnableLambdas and generators, so what each
route received is what LangChain passed it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig, RunnableGenerator, RunnableLambda

from router import Decision, LimitsConfig, Router
from router.errors import ConfigError, InputError
from router.langchain import DecisionRunnable, IntentRouter, decision_from, route_by_intent

WEATHER = "will it rain today"
BALANCE = "what is my bank balance"
GREETING = "hello there"
OUT_OF_SCOPE = "tell me a joke about cats"
ESCALATED = "what is the capital of mongolia"


class Recorder(BaseCallbackHandler):
    """Every chain run LangChain reports: start (name, tags, metadata, parent) and its end or error."""

    def __init__(self) -> None:
        self.starts: dict[UUID, dict[str, Any]] = {}
        self.ends: dict[UUID, Any] = {}
        self.errors: dict[UUID, BaseException] = {}

    def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, tags: list[str] | None = None,
                       metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.starts[run_id] = {"name": kwargs.get("name"), "input": inputs, "parent": parent_run_id,
                               "tags": tags or [], "metadata": metadata or {}}

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.ends[run_id] = outputs

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self.errors[run_id] = error

    def named(self, name: str) -> list[UUID]:
        return [run_id for run_id, start in self.starts.items() if start["name"] == name]


@pytest.fixture(scope="module")
def classifier(mini_router: Router) -> DecisionRunnable:
    return DecisionRunnable(mini_router)


def test_the_queries_used_here_decide_as_the_tests_assume(mini_router: Router) -> None:
    assert mini_router.classify(WEATHER).accepted and mini_router.classify(WEATHER).intent == "weather"
    assert mini_router.classify(BALANCE).accepted and mini_router.classify(BALANCE).skill == "banking.balance"
    assert mini_router.classify(GREETING).accepted and mini_router.classify(GREETING).intent == "greeting"
    assert mini_router.classify(OUT_OF_SCOPE).out_of_scope
    escalated = mini_router.classify(ESCALATED)
    assert escalated.escalate and not escalated.out_of_scope


# -- DecisionRunnable -----------------------------------------------------------------------------------
def test_invoke_returns_the_routers_decision(classifier: DecisionRunnable, mini_router: Router) -> None:
    decision = classifier.invoke(WEATHER)
    assert isinstance(decision, Decision)
    expected = mini_router.classify(WEATHER)
    assert (decision.intent, decision.tier, decision.confidence) == (expected.intent, expected.tier,
                                                                      expected.confidence)


@pytest.mark.parametrize("value", [
    {"text": WEATHER, "user": "u1"},
    HumanMessage(WEATHER),
    [SystemMessage("you are helpful"), HumanMessage(BALANCE), AIMessage("you have $3"), HumanMessage(WEATHER)],
    [("system", "be brief"), ("user", BALANCE), ("assistant", "$3"), ("user", WEATHER)],
    [{"role": "user", "content": WEATHER}, {"role": "assistant", "content": "maybe"}],
    {"text": [HumanMessage(BALANCE), HumanMessage(WEATHER)]},
])
def test_invoke_reads_the_text_of_each_input_shape(classifier: DecisionRunnable, value: Any) -> None:
    # A conversation is classified by the user's last turn, whatever the assistant said after it.
    assert classifier.invoke(value).intent == "weather"


def test_a_prompt_feeds_the_router_through_the_pipe(classifier: DecisionRunnable) -> None:
    chain = ChatPromptTemplate.from_messages([("system", "you route"), ("human", "{question}")]) | classifier
    assert chain.invoke({"question": WEATHER}).intent == "weather"


def test_key_names_the_dict_field_with_the_text(mini_router: Router) -> None:
    runnable = DecisionRunnable(mini_router, key="query")
    assert runnable.invoke({"query": BALANCE, "text": WEATHER}).intent == "balance"


def test_ainvoke_awaits_aclassify_on_the_callers_loop_not_in_a_thread(mini_router: Router,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # LangChain's default ainvoke runs invoke in a worker thread: that would call the sync classify there.
    seen: list[tuple[asyncio.AbstractEventLoop, int]] = []
    aclassify = mini_router.aclassify

    async def spied(text: str, **kwargs: Any) -> Decision:
        seen.append((asyncio.get_running_loop(), threading.get_ident()))
        return await aclassify(text, **kwargs)

    def refused(*args: Any, **kwargs: Any) -> Decision:
        raise AssertionError("ainvoke called the sync classify")

    monkeypatch.setattr(mini_router, "aclassify", spied)
    monkeypatch.setattr(mini_router, "classify", refused)
    classifier = DecisionRunnable(mini_router)

    async def both() -> tuple[list[Decision], asyncio.AbstractEventLoop]:
        decisions = await asyncio.gather(classifier.ainvoke(WEATHER), classifier.ainvoke({"text": BALANCE}))
        return list(decisions), asyncio.get_running_loop()

    decisions, loop = asyncio.run(both())
    assert [d.intent for d in decisions] == ["weather", "balance"]
    assert seen == [(loop, threading.get_ident())] * 2


def test_batch_and_abatch_keep_the_order(classifier: DecisionRunnable) -> None:
    inputs: list[Any] = [WEATHER, {"text": BALANCE}, HumanMessage(GREETING), OUT_OF_SCOPE]
    for decisions in (classifier.batch(inputs), asyncio.run(classifier.abatch(inputs))):
        assert [d.intent for d in decisions] == ["weather", "balance", "greeting", None]
        assert decisions[3].out_of_scope


def test_batch_larger_than_the_routers_max_batch_is_classified_in_slices(mini_index: Path) -> None:
    small = DecisionRunnable(Router.load(mini_index, limits=LimitsConfig(max_batch=2)))
    inputs: list[Any] = [WEATHER, BALANCE, GREETING, WEATHER, BALANCE]
    expected = ["weather", "balance", "greeting", "weather", "balance"]
    assert [d.intent for d in small.batch(inputs)] == expected
    assert [d.intent for d in asyncio.run(small.abatch(inputs))] == expected


def test_a_bad_input_in_a_batch_fails_alone_with_return_exceptions(classifier: DecisionRunnable) -> None:
    inputs: list[Any] = [WEATHER, "   ", 42, BALANCE]
    for out in (classifier.batch(inputs, return_exceptions=True),
                asyncio.run(classifier.abatch(inputs, return_exceptions=True))):
        assert isinstance(out[0], Decision) and out[0].intent == "weather"
        assert isinstance(out[1], InputError) and "inputs[1] is empty" in str(out[1])
        assert isinstance(out[2], InputError) and "int 42" in str(out[2])
        assert isinstance(out[3], Decision) and out[3].intent == "balance"
    with pytest.raises(InputError, match="inputs\\[1\\] is empty"):
        classifier.batch(inputs)
    with pytest.raises(InputError, match="inputs\\[1\\] is empty"):
        asyncio.run(classifier.abatch(inputs))


def test_stream_and_astream_yield_the_one_decision(classifier: DecisionRunnable) -> None:
    assert [d.intent for d in classifier.stream(WEATHER)] == ["weather"]

    async def collect() -> list[Decision]:
        return [d async for d in classifier.astream(BALANCE)]

    assert [d.intent for d in asyncio.run(collect())] == ["balance"]


def test_composes_with_the_pipe(classifier: DecisionRunnable) -> None:
    chain = classifier | RunnableLambda(lambda d: d.intent if d.accepted else "unsure")
    assert chain.invoke(WEATHER) == "weather"
    assert chain.batch([BALANCE, OUT_OF_SCOPE]) == ["balance", "unsure"]
    assert asyncio.run(chain.ainvoke(GREETING)) == "greeting"


@pytest.mark.parametrize("value, message", [
    (42, "expected a str, a dict with 'text', a message, a list of messages or a prompt value; got int 42"),
    ({"query": WEATHER}, "a dict needs the key 'text' (the text to classify); got keys ['query']"),
    ({"text": {"text": WEATHER}}, "input['text']: expected a str or messages, got dict"),
    ([AIMessage("hello"), SystemMessage("x")], "no human message to classify among 2 message(s)"),
    ([1, 2], "a list must hold messages"),
    ("", "text is empty or only whitespace"),
    ("x" * 2001, "text has 2001 characters; the limit (limits.max_text_chars) is 2000"),
])
def test_bad_input_is_an_input_error_naming_the_value(classifier: DecisionRunnable, value: Any, message: str) -> None:
    with pytest.raises(InputError) as raised:
        classifier.invoke(value)
    assert message in str(raised.value)
    with pytest.raises(InputError):
        asyncio.run(classifier.ainvoke(value))


def test_a_callback_handler_sees_the_named_run(classifier: DecisionRunnable) -> None:
    recorder = Recorder()
    decision = classifier.invoke(WEATHER, {"callbacks": [recorder], "tags": ["t1"], "metadata": {"m": 1}})
    [run] = recorder.named("TieredRouter")
    assert recorder.starts[run]["tags"] == ["t1"] and recorder.starts[run]["metadata"]["m"] == 1
    assert recorder.ends[run] is decision or recorder.ends[run] == {"output": decision}

    renamed = classifier.with_config(run_name="classify-turn")
    asyncio.run(renamed.ainvoke(BALANCE, {"callbacks": [recorder]}))
    assert len(recorder.named("classify-turn")) == 1

    recorder.starts.clear()
    classifier.batch([WEATHER, BALANCE, 7], {"callbacks": [recorder]}, return_exceptions=True)
    runs = recorder.named("TieredRouter")
    assert len(runs) == 3  # one run per input, though one classification did them all
    assert len([r for r in runs if r in recorder.errors]) == 1

    recorder.starts.clear()
    with pytest.raises(InputError):
        classifier.invoke(42, {"callbacks": [recorder]})
    [failed] = recorder.named("TieredRouter")
    assert isinstance(recorder.errors[failed], InputError)


# -- IntentRouter ---------------------------------------------------------------------------------------
def _seen(tag: str) -> RunnableLambda[Any, Any]:
    """A route that says which route it is, what input it got and which Decision chose it."""
    def route(value: Any, config: RunnableConfig) -> dict[str, Any]:
        decision = decision_from(config)
        assert decision is not None and decision_from() == decision  # also from the run's context
        return {"route": tag, "input": value, "intent": decision.intent,
                "route_key": config["metadata"]["router_route"]}
    return RunnableLambda(route)


@pytest.fixture(scope="module")
def by_intent(mini_router: Router) -> IntentRouter:
    return route_by_intent(mini_router, {"weather": _seen("weather"), "banking.balance": _seen("balance")},
                           fallback=_seen("fallback"))


def test_an_in_scope_query_goes_to_its_route_with_its_original_input(by_intent: IntentRouter) -> None:
    message = {"text": WEATHER, "thread": 9}
    assert by_intent.invoke(message) == {"route": "weather", "input": message, "intent": "weather",
                                         "route_key": "weather"}


def test_a_route_key_may_be_the_intents_skill(by_intent: IntentRouter) -> None:
    assert by_intent.invoke(BALANCE)["route"] == "balance"
    assert by_intent.invoke(BALANCE)["route_key"] == "banking.balance"


@pytest.mark.parametrize("query, intent", [(OUT_OF_SCOPE, None), (ESCALATED, "greeting"), (GREETING, "greeting")])
def test_out_of_scope_escalated_and_unrouted_queries_go_to_the_fallback(by_intent: IntentRouter, query: str,
                                                                        intent: str | None) -> None:
    # The fallback still gets the Decision: it may answer an escalated query with the best guess in hand.
    assert by_intent.invoke(query) == {"route": "fallback", "input": query, "intent": intent,
                                       "route_key": "fallback"}


def test_intent_router_async_and_batches(by_intent: IntentRouter) -> None:
    inputs: list[Any] = [OUT_OF_SCOPE, WEATHER, BALANCE, HumanMessage(WEATHER), GREETING]
    expected = ["fallback", "weather", "balance", "weather", "fallback"]
    assert asyncio.run(by_intent.ainvoke(WEATHER))["route"] == "weather"
    assert [r["route"] for r in by_intent.batch(inputs)] == expected
    assert [r["route"] for r in asyncio.run(by_intent.abatch(inputs))] == expected
    assert [r["input"] for r in by_intent.batch(inputs)] == inputs


def test_intent_router_batch_keeps_a_bad_inputs_error_in_its_place(by_intent: IntentRouter) -> None:
    out = by_intent.batch([WEATHER, 42, OUT_OF_SCOPE], return_exceptions=True)
    assert out[0]["route"] == "weather" and out[2]["route"] == "fallback"
    assert isinstance(out[1], InputError) and "int 42" in str(out[1])
    with pytest.raises(InputError, match="int 42"):
        by_intent.batch([WEATHER, 42])


def test_a_failing_route_fails_the_run(mini_router: Router) -> None:
    def broken(_: Any) -> None:
        raise RuntimeError("route down")

    routed = route_by_intent(mini_router, {"weather": broken}, fallback=lambda x: "fallback")
    with pytest.raises(RuntimeError, match="route down"):
        routed.invoke(WEATHER)
    out = routed.batch([WEATHER, OUT_OF_SCOPE], return_exceptions=True)
    assert isinstance(out[0], RuntimeError) and out[1] == "fallback"


def test_intent_router_streams_the_chosen_routes_chunks(mini_router: Router) -> None:
    def words(inputs: Iterator[Any]) -> Iterator[str]:
        for value in inputs:
            for word in str(value).split():
                yield word + " "

    async def awords(inputs: AsyncIterator[Any]) -> AsyncIterator[str]:
        async for value in inputs:
            for word in str(value).split():
                yield word.upper() + " "

    routed = route_by_intent(mini_router, {"weather": RunnableGenerator(words, awords)},
                             fallback=RunnableLambda(lambda x: "no idea"))
    recorder = Recorder()
    assert list(routed.stream(WEATHER, {"callbacks": [recorder]})) == ["will ", "it ", "rain ", "today "]
    [run] = recorder.named("IntentRouter")
    assert recorder.ends[run] in ("will it rain today ", {"output": "will it rain today "})
    assert list(routed.stream(OUT_OF_SCOPE)) == ["no idea"]

    async def collect(query: str) -> list[str]:
        return [chunk async for chunk in routed.astream(query)]

    assert asyncio.run(collect(WEATHER)) == ["WILL ", "IT ", "RAIN ", "TODAY "]
    assert asyncio.run(collect(OUT_OF_SCOPE)) == ["no idea"]


def test_the_trace_shows_the_classification_and_the_route(by_intent: IntentRouter) -> None:
    recorder = Recorder()
    by_intent.invoke(WEATHER, {"callbacks": [recorder], "metadata": {"user": "u1"}})
    [top] = recorder.named("IntentRouter")
    [classify] = recorder.named("TieredRouter")
    [route] = [r for r, s in recorder.starts.items() if "route:weather" in s["tags"]]
    assert recorder.starts[classify]["parent"] == top and "classify" in recorder.starts[classify]["tags"]
    assert recorder.starts[route]["parent"] == top
    metadata = recorder.starts[route]["metadata"]
    assert metadata["user"] == "u1" and metadata["router_route"] == "weather"
    assert metadata["router_decision"]["intent"] == "weather"  # plain JSON, as a tracer records it
    assert "router_decision" not in recorder.starts[top]["metadata"]

    recorder = Recorder()
    asyncio.run(by_intent.ainvoke(OUT_OF_SCOPE, {"callbacks": [recorder]}))
    assert [s for s in recorder.starts.values() if "route:fallback" in s["tags"]]
    recorder = Recorder()
    by_intent.batch([WEATHER, OUT_OF_SCOPE], {"callbacks": [recorder]})
    assert len(recorder.named("IntentRouter")) == 2 and len(recorder.named("TieredRouter")) == 2


def test_a_route_that_is_no_intent_nor_skill_is_refused(mini_router: Router) -> None:
    with pytest.raises(ConfigError, match="'wether' is neither an intent nor a skill of index 'mini'; known: .*"):
        IntentRouter(mini_router, {"wether": lambda x: x}, fallback=lambda x: x)


def test_decision_from_outside_a_route_is_none() -> None:
    assert decision_from() is None
    assert decision_from({"metadata": {"other": 1}}) is None


# -- the optional dependency ------------------------------------------------------------------------------
def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])


def test_import_router_does_not_import_langchain() -> None:
    done = _python("import sys, router; print(sorted(m for m in sys.modules if m.startswith('langchain')))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_langchain_core_the_error_says_what_to_install() -> None:
    done = _python("import sys; sys.modules['langchain_core'] = None\n"
                   "from router.errors import MissingDependency\n"
                   "try:\n    import router.langchain\nexcept MissingDependency as exc:\n    print(exc)")
    assert done.returncode == 0, done.stderr
    assert "pip install 'tiered-router[langchain]'" in done.stdout
    assert "langchain_core is not installed" in done.stdout
