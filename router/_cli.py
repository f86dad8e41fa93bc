"""The ``router`` command: build, classify, eval, serve, mcp, feedback, review, eval-skills, drill, bench
compare, models export."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import ValidationError

from router._config import EncoderConfig, FinetuneConfig, RouterConfig, load_config
from router._strict import format_validation_error
from router.errors import ConfigError, MissingDependency, RouterError
from router.service._config import ENV_PREFIX, ServeConfig, load_serve_config


def _config_from_args(args: argparse.Namespace) -> RouterConfig:
    if args.config:
        config = load_config(args.config)
    else:
        source: dict[str, Any]
        if args.intents:
            source = {"intents": args.intents, "validation": args.validation}
        else:
            source = {"dataset": args.dataset or "clinc150"}
        config = RouterConfig(name=args.name or (args.dataset or "default"), **source)
    data = config.model_dump()
    if args.name:
        data["name"] = args.name
    for key in ("model", "threads", "backend"):
        if getattr(args, key) is not None:
            data["encoder"][key] = getattr(args, key)
    if args.mine_rules:
        data["rules"]["mine"] = True
    if getattr(args, "static", None) is not None:
        data["static"]["enabled"] = args.static == "on"
    if getattr(args, "llm", None):
        data["llm"] = _llm_from_args(args, data.get("llm"))
    tuning = {"epochs": args.epochs, "oos": args.finetune_oos, "seed": args.seed}
    if args.finetune or any(v is not None for v in tuning.values()):
        if not args.finetune and data.get("finetune") is None:
            raise ConfigError("--epochs, --seed and --finetune-oos set fine-tuning options: add --finetune")
        data["finetune"] = {**(data.get("finetune") or {}), **{k: v for k, v in tuning.items() if v is not None}}
    try:
        return RouterConfig.model_validate(data)  # re-runs the validators on the merged values
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "command line")) from exc


def _llm_from_args(args: argparse.Namespace, current: dict[str, Any] | None) -> dict[str, Any]:
    """``--llm BACKEND`` and its options: one backend, replacing the config's chain."""
    backend: dict[str, Any] = {"backend": args.llm}
    options = {"url": args.llm_url, "model": args.llm_model, "method": args.llm_method,
               "constraint": args.llm_constraint, "structured": args.llm_structured,
               "timeout_s": args.llm_timeout, "threads": args.llm_threads}
    backend.update({k: v for k, v in options.items() if v is not None})
    if args.llm == "llama_cpp" and "model" not in backend:
        backend["model"] = "smollm2-135m-q4"
    llm = dict(current or {})
    llm["backends"] = [backend]
    return llm


def _add_llm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--llm", help="tier 2 backend: llama_cpp (embedded), openai_compatible, vllm, memory")
    p.add_argument("--llm-url", help="base URL of the LLM server, e.g. http://127.0.0.1:8001/v1")
    p.add_argument("--llm-model", help="served model name, or for llama_cpp a models/ manifest or .gguf path")
    p.add_argument("--llm-method", choices=["logprob", "choice"], help="llama_cpp: label scoring method")
    p.add_argument("--llm-constraint", choices=["json_schema", "json_object", "grammar"],
                   help="openai_compatible: how the answer is constrained")
    p.add_argument("--llm-structured", choices=["structured_outputs", "guided_choice"],
                   help="vllm: request field (guided_choice before vLLM 0.12)")
    p.add_argument("--llm-timeout", type=float, help="per-call timeout in seconds (default 2)")
    p.add_argument("--llm-threads", type=int, help="llama_cpp: CPU threads")


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="router YAML config")
    p.add_argument("--dataset", help="a shipped dataset: clinc150 or banking77")
    p.add_argument("--intents", help="intent YAML, or labelled JSONL/CSV training file")
    p.add_argument("--validation", help="labelled JSONL/CSV validation file for calibration and rule mining")
    p.add_argument("--name", help="index name under the index folder (default: the config's, or 'default')")
    p.add_argument("--model", help="encoder model manifest (default minilm-l6-int8; minilm-l6-fp32 is opt-in)")
    p.add_argument("--backend", help="encoder backend (onnx, st, hashing)")
    p.add_argument("--threads", type=int,
                   help=f"encoder threads at query time (default {EncoderConfig.model_fields['threads'].default})")
    p.add_argument("--mine-rules", action="store_true", help="mine keyword rules for tier 0")
    p.add_argument("--static", choices=["on", "off"], help="tier 1a, the static token table (default on)")
    p.add_argument("--finetune", action="store_true",
                   help="fine-tune the encoder on the intents first (needs the [train] extra; see README)")
    p.add_argument("--epochs", type=int,
                   help=f"fine-tuning epochs (default {FinetuneConfig.model_fields['epochs'].default})")
    p.add_argument("--seed", type=int, help=f"fine-tuning seed (default {FinetuneConfig.model_fields['seed'].default})")
    p.add_argument("--finetune-oos", choices=["class", "negatives", "ignore"],
                   help=f"fine-tuning: the out-of-scope examples as an extra class, as negatives, or left out "
                        f"(default {FinetuneConfig.model_fields['oos'].default})")
    _add_index_dir(p)
    _add_llm_args(p)


def cmd_build(args: argparse.Namespace) -> int:
    """stdout: one JSON summary of the index (for scripts); mined rules and notes go to stderr."""
    from router._builder import Builder
    from router._paths import indexes_dir

    if args.compact:
        from router.learn._compact import compact
        from router.service._state import learn_state

        # The log `router serve` learns into, found as it finds it: --state over the model-routing file's state
        # (url, prefix, password_env), and ROUTER_SERVE_* as serve reads them. No [server] extra needed.
        given = {"state": args.state, "model_routing": args.model_routing, "learn_log": args.learn_log}
        serve = load_serve_config({k: v for k, v in given.items() if v is not None}, "router build --compact")
        print(json.dumps(compact(args.name or "default", index_dir=args.index_dir, state=learn_state(serve),
                                 progress=_progress(args), learn_log=serve.learn_log), indent=2))
        return 0
    if not (args.config or args.dataset or args.intents):
        args.dataset, args.name = "clinc150", args.name or "default"
    config = _config_from_args(args)
    report = Builder(config, progress=_progress(args)).build(indexes_dir(args.index_dir) / config.name)
    m = report.manifest
    for rule in m.mined_rules:
        print(f"rule {rule.intent:<28} {rule.keyword!r:<28} train support {rule.train_support:>4}  "
              f"val support {rule.val_support:>3}  val precision {rule.val_precision:.3f}", file=sys.stderr)
    cal = m.calibration
    print(json.dumps({
        "index": str(report.folder),
        "encoder": m.encoder_id,
        "vector_index": m.vector_index,
        "n_intents": m.n_intents,
        "n_examples": m.n_examples,
        "mined_rules": len(m.mined_rules),
        "build_seconds": m.build_seconds,
        "stage_seconds": {k: round(v, 2) for k, v in report.seconds.items()},
        "calibration": cal.model_dump(),
        "static": m.static.model_dump() if m.static else None,
        "llm_gate": m.llm_gate.model_dump() if m.llm_gate else None,
        "finetune": m.finetune.model_dump() if m.finetune else None,
    }, indent=2))
    if m.static is not None:
        e2e, alone = m.static.end_to_end, m.static.transformer_only
        st = m.static.calibration
        print(f"static tier: accepts {_pct(st.coverage)} of held-out in-scope queries at {_pct(st.precision, 2)} "
              f"precision (weighting {m.static.weighting}); pipeline: coverage {_pct(e2e.coverage)}, precision "
              f"{_pct(e2e.precision, 2)}, out-of-scope recall {_pct(e2e.oos_recall)} (transformer alone: "
              f"{_pct(alone.coverage)}, {_pct(alone.precision, 2)}, {_pct(alone.oos_recall)})", file=sys.stderr)
    if m.llm_gate is not None:
        print(f"tier 2: {'on' if m.llm_gate.enabled else 'OFF'}: {m.llm_gate.reason}", file=sys.stderr)
    return 0


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}%}"


def cmd_classify(args: argparse.Namespace) -> int:
    from router._router import Router
    from router.llm import LLMConfig

    llm: LLMConfig | Literal["built"] = "built"
    if args.llm:
        try:
            llm = LLMConfig.model_validate({**_llm_from_args(args, None), "gate": "on"})
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, "--llm options")) from exc
    router = Router.load(args.index, index_dir=args.index_dir, llm=llm)
    try:
        if router.escalator is not None:
            print(f"tier 2: {router.escalator.status}", file=sys.stderr)
        router.warm()  # the first call would otherwise carry the model load and the prompt cache fill
        for text in args.text:
            print(json.dumps(router.classify(text).to_dict()))
    finally:
        router.close()
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from router._evaluation import run_eval
    from router._intents import read_labelled
    from router.datasets import load_dataset

    if args.train:
        if not args.test:
            raise RouterError("router eval --train needs --test")
        args.intents, args.validation = args.train, args.val
        test = read_labelled(args.test)
    else:
        args.dataset = args.dataset_name or args.dataset or "clinc150"
        test = load_dataset(args.dataset).test
    config = _config_from_args(args)
    stream = None
    if args.learn_from:
        from router.learn._eval import learn_stream

        stream = learn_stream(args.learn_from, dataset=config.dataset, val=config.validation)
    result = run_eval(config, test, progress=_progress(args), index_dir=args.index_dir, learn_from=stream,
                      learn_feed=args.learn_feed)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    return 0


_SERVER_MODULES = {"fastapi", "starlette", "uvicorn", "uvloop", "httptools", "prometheus_client"}


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from router.service import serve
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in _SERVER_MODULES:
            raise
        raise MissingDependency(f"router serve needs the [server] extra ({exc.name} is not installed): "
                                "pip install 'tiered-router[server]'") from exc

    config = load_serve_config(_serve_options(args))
    serve(config)
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    """An MCP server over stdio until the client closes it; stdout is the protocol, logs go to stderr."""
    import logging

    from router.mcp import McpOptions, run

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="router mcp: %(levelname)s %(name)s: "
                                                                          "%(message)s")
    run(McpOptions(index=args.index, index_dir=args.index_dir, skills=args.skills, model_routing=args.model_routing,
                   session=args.session, approve_tool=args.approve_tool == "on"))
    return 0


def _service_client(args: argparse.Namespace) -> Any:
    """The ``RouterClient`` of ``--url`` and ``--api-key-env`` (the feedback and review commands)."""
    from router._client import RouterClient

    return RouterClient(args.url, api_key_env=args.api_key_env)


def cmd_feedback(args: argparse.Namespace) -> int:
    """stdout: the item the service took, as JSON (``status``: queued, held_out or duplicate)."""
    with _service_client(args) as client:
        result = client.feedback(args.text, args.intent, out_of_scope=args.out_of_scope, source=args.source,
                                 decision_id=args.decision_id, override=args.override)
    print(json.dumps(result))
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    """``list`` (the default): ``{"items": [...], "total": n}`` (at most ``--limit`` items); ``approve ID`` /
    ``reject ID``: the service's answer. JSON."""
    if args.action != "list" and not args.review_id:
        raise ConfigError(f"router review {args.action} needs the review id (router review lists them)")
    if args.action == "list" and args.review_id:
        raise ConfigError(f"router review list takes no id (got {args.review_id!r}); to decide one: "
                          f"router review approve|reject {args.review_id}")
    with _service_client(args) as client:
        if args.action == "approve":
            answer: Any = client.approve_review(args.review_id)
        elif args.action == "reject":
            answer = client.reject_review(args.review_id)
        else:
            answer = client.review(args.limit)
    print(json.dumps(answer))
    return 0


def _add_client_args(p: argparse.ArgumentParser) -> None:
    from router._client import DEFAULT_API_KEY_ENV, DEFAULT_BASE_URL

    p.add_argument("--url", default=DEFAULT_BASE_URL, help=f"the service (default {DEFAULT_BASE_URL})")
    p.add_argument("--api-key-env", default=DEFAULT_API_KEY_ENV,
                   help=f"variable holding the service's API key, sent when set (default {DEFAULT_API_KEY_ENV})")


def cmd_alerts(args: argparse.Namespace) -> int:
    from importlib.resources import files

    # Package data (router/service/alerts.yml), printed as shipped: `router alerts > rules.yml`.
    sys.stdout.write(files("router.service").joinpath("alerts.yml").read_text(encoding="utf-8"))
    return 0


def _dispatch_setup(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    from router.dispatch import load_model_routing, load_registry
    from router.dispatch._evaluate import load_golden

    return load_model_routing(args.model_routing), load_registry(args.skills), load_golden(args.golden)


def _print_rows(rows: list[dict[str, Any]], columns: list[str]) -> None:
    print("  ".join(f"{c:>22}" for c in columns))
    for row in rows:
        print("  ".join(f"{'-' if row[c] is None else row[c]!s:>22}" for c in columns))


def cmd_eval_skills(args: argparse.Namespace) -> int:
    import asyncio

    from router.dispatch import Dispatcher
    from router.dispatch._evaluate import eval_skills, model_refs

    config, skills, cases = _dispatch_setup(args)
    template = config.defaults["extraction"]
    refs = model_refs(args.models.split(","), template) if args.models else config.chain("*", "extraction")
    for ref in refs:
        if ref.provider not in config.providers or ref.model not in config.prices:
            raise ConfigError(f"--models: {ref.key!r} needs a provider in `providers` and a price in `prices` of "
                              "the model-routing file")
    async def evaluate() -> dict[str, Any]:
        async with Dispatcher(config, skills) as dispatcher:  # its connections live and close on this loop
            return await eval_skills(dispatcher, cases, refs, args.tolerance)

    report = asyncio.run(evaluate())
    if args.json:
        print(json.dumps(report))
        return 0
    _print_rows(report["rows"], ["skill", "model", "accuracy", "errors", "cost_usd", "cost_per_correct_usd"])
    for skill, winner in report["winners"].items():
        print(f"winner {skill}: {winner or 'none (no model answered correctly)'}")
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    import asyncio

    from router.dispatch import Dispatcher
    from router.dispatch._evaluate import drill

    config, skills, cases = _dispatch_setup(args)
    async def run_drill() -> dict[str, Any]:
        async with Dispatcher(config, skills) as primary, Dispatcher(config, skills,
                                                                     drill_stages=frozenset({args.stage})) as d:
            return await drill(primary, d, cases, args.stage)

    report = asyncio.run(run_drill())
    if args.json:
        print(json.dumps(report))
    else:
        for label in ("primary", "secondary"):
            print(f"{label:>10}: {report[label]}")
        for skill in report["no_secondary"]:
            print(f"no secondary: {skill} has a one-model {args.stage} chain")
        for item in report["broke"]:
            print(f"broke: {item['skill']}: {item['text']!r} -> {item['secondary_model']}: {item['secondary']}")
        print(f"verdict: {report['verdict']}")
    return 0 if report["verdict"] == "ok" else 1


def cmd_bench_compare(args: argparse.Namespace) -> int:
    from router.bench._cli import run

    return run(args)


def cmd_models_export(args: argparse.Namespace) -> int:
    from router._model_store import load_manifest
    from router.encoders._onnx import onnx_model_path

    print(onnx_model_path(load_manifest(args.model)))
    return 0


def _add_bench_args(p: argparse.ArgumentParser) -> None:
    from router.bench._cli import add_arguments

    add_arguments(p)


_SWITCH = {"on": True, "off": False, "auto": None}


def _field_type(annotation: Any) -> tuple[Any, bool]:
    """(the type, whether None is allowed) of a ServeConfig field: ``int | None`` is (int, True). A
    ``Literal[...] | None`` is a ``typing.Union``, not a ``UnionType``: both count."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if (isinstance(annotation, UnionType) or get_origin(annotation) is Union) and len(args) == 1:
        return args[0], True
    return annotation, False


def _add_serve_args(p: argparse.ArgumentParser) -> None:
    """One flag per ``ServeConfig`` field: ``--kebab-case``, its help the field's description and default
    (taken from the model, so the two cannot disagree). A bool is ``on|off`` (bare: on), an optional one also ``auto``
    (None: decided at start-up). A flag left out is None, and the environment or the default applies."""
    p.epilog = (f"Each option can also be set in the environment as {ENV_PREFIX}<OPTION> (e.g. {ENV_PREFIX}PORT); "
                "a flag wins over the variable.")
    for name, field in ServeConfig.model_fields.items():
        kind, optional = _field_type(field.annotation)
        text = field.description or name.replace("_", " ")
        if field.default is not None:
            text += f" (default {field.default})"
        flag = "--" + name.replace("_", "-")
        if kind is bool:  # a bare `--proxy` means on
            p.add_argument(flag, choices=["on", "off", "auto"] if optional else ["on", "off"], nargs="?",
                           const="on", help=text)
        elif get_origin(kind) is Literal:  # e.g. --learning off|review|auto
            p.add_argument(flag, choices=[str(choice) for choice in get_args(kind)], help=text)
        else:
            p.add_argument(flag, type=kind, help=text)


def _serve_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``ServeConfig`` values given on the command line (a flag left out is not among them)."""
    options: dict[str, Any] = {}
    for name, field in ServeConfig.model_fields.items():
        value = getattr(args, name)
        if value is None:
            continue
        options[name] = _SWITCH[value] if _field_type(field.annotation)[0] is bool else value
    return options


def _add_index_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index-dir", help="folder of named indexes (default: $ROUTER_INDEX_DIR, else ./indexes)")


_QUIET_HELP = "no progress bars on stderr (they are shown only when stderr is a terminal)"


def _add_quiet(p: argparse.ArgumentParser) -> None:
    """``-q`` after a subcommand too; SUPPRESS keeps the subparser from resetting ``router -q``'s value."""
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=_QUIET_HELP)


def _progress(args: argparse.Namespace) -> bool:
    """Progress is on unless ``--quiet``; ``router.progress`` shows it only on a terminal."""
    return not getattr(args, "quiet", False)


def build_parser() -> argparse.ArgumentParser:
    from router import __version__

    parser = argparse.ArgumentParser(prog="router", description=__doc__,
                                     epilog="exit codes: 0 ok, 1 a router error (message on stderr), 2 a usage error")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__} (tiered-router)")
    parser.add_argument("-q", "--quiet", action="store_true", help=_QUIET_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="build an index (default: CLINC150 as 'default')")
    _add_source_args(p)
    p.add_argument("--compact", action="store_true",
                   help="fold the index's learned-examples log into a new version of it (--name, default "
                        "'default'); prints a JSON summary")
    p.add_argument("--state", help="with --compact: memory or redis://host:port/db, over the model-routing file's "
                                   "state.url: a Redis state holds the learning log (as router serve --state; "
                                   "default $ROUTER_SERVE_STATE)")
    p.add_argument("--model-routing", help="with --compact: the model-routing file router serve uses; its state: "
                                           "section (url, prefix, password_env) says where a Redis-shared learning "
                                           "log lives (as router serve --model-routing; default "
                                           "$ROUTER_SERVE_MODEL_ROUTING)")
    p.add_argument("--learn-log", help="with --compact: the learning log file, when it is not the index config's "
                                       "learning.log (as router serve --learn-log; default $ROUTER_SERVE_LEARN_LOG)")
    _add_quiet(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("classify", help="classify texts, print each Decision as JSON")
    p.add_argument("text", nargs="+")
    p.add_argument("--index", default="default", help="index name or folder (default: default)")
    _add_index_dir(p)
    _add_llm_args(p)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("eval", help="build on a train split and evaluate on its test split")
    p.add_argument("dataset_name", nargs="?", help="clinc150 or banking77")
    _add_source_args(p)
    p.add_argument("--train", help="labelled train file (JSONL/CSV)")
    p.add_argument("--test", help="labelled test file (JSONL/CSV)")
    p.add_argument("--val", help="labelled validation file (JSONL/CSV)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--learn-from", metavar="SPLIT",
                   help="before the final test, stream this labelled split through the router and feed back the "
                        "escalated and wrong queries with their gold labels: 'val' (--val, or the dataset's) or a "
                        "JSONL/CSV file (docs/learning.md)")
    p.add_argument("--learn-feed", choices=["missed", "all"], default="missed",
                   help="with --learn-from: feed back the escalated and wrong queries (missed, the default), or "
                        "every query of the stream (all: the ceiling of what it can teach)")
    _add_quiet(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("serve", help="serve POST /v1/classify over HTTP (default 127.0.0.1:8000, index 'default'); "
                                     "needs the [server] extra")
    _add_serve_args(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("mcp", help="an MCP tool server over stdio: classify, one tool per skill (--skills), approve "
                                   "and reject; needs the [mcp] extra")
    p.add_argument("--index", default="default", help="index name or folder (default: default)")
    _add_index_dir(p)
    p.add_argument("--skills", help="module:registry of the skills offered as tools (e.g. "
                                    "router.dispatch.demo:registry; default: none, only classify)")
    p.add_argument("--model-routing", help="model-routing file for the skills' model calls and budgets, merged over "
                                           "the shipped one")
    p.add_argument("--session", help="the session the budgets meter this server's calls on (default: a random id "
                                     "per server process)")
    p.add_argument("--approve-tool", choices=["on", "off"], default="on",
                   help="offer the approve and reject tools (default on); off: a writes skill's pending action is "
                        "approved through router serve's approval routes (the approver key), on a shared state")
    p.set_defaults(func=cmd_mcp)

    p = sub.add_parser("feedback", help="teach a running service one example: TEXT is --intent X, or "
                                        "--out-of-scope (POST /v1/feedback)")
    p.add_argument("text")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--intent", help="the intent TEXT belongs to")
    which.add_argument("--out-of-scope", action="store_true", help="TEXT belongs to no intent")
    p.add_argument("--source", choices=["human", "llm"], default="human",
                   help="who says so (default human; intents of skills that write learn only from human)")
    p.add_argument("--override", action="store_true",
                   help="replace an example that says otherwise (source human only)")
    p.add_argument("--decision-id", help="the id of the Decision this corrects")
    _add_client_args(p)
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("review", help="the tier-2 answers waiting for a person (learning.mode review): list, "
                                      "approve ID or reject ID, on a running service")
    p.add_argument("action", nargs="?", choices=["list", "approve", "reject"], default="list",
                   help="list (default), approve or reject")
    p.add_argument("review_id", nargs="?", help="the review id (approve, reject)")
    p.add_argument("--limit", type=int, default=100, help="list: at most this many items, the oldest (1 to 10000; "
                                                          "default 100); total says how many wait")
    _add_client_args(p)
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("alerts", help="print the Prometheus alert rules for `router serve`'s /metrics "
                                      "(router alerts > rules.yml; see docs/operations.md)")
    p.set_defaults(func=cmd_alerts)

    def dispatch_args(p: argparse.ArgumentParser) -> None:
        from router.dispatch._config import SHIPPED

        p.add_argument("--model-routing", help=f"model-routing file merged over the shipped one ({SHIPPED.name})")
        p.add_argument("--skills", default="router.dispatch.demo:registry", help="module:registry of the skills")
        p.add_argument("--golden", default=str(SHIPPED.with_name("demo_golden.jsonl")),
                       help="JSONL of {skill, text, params}")
        p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("eval-skills", help="accuracy, cost and cost per correct answer per (skill, model)")
    dispatch_args(p)
    p.add_argument("--models", help="comma-separated provider/model candidates (default: the extraction chain)")
    p.add_argument("--tolerance", type=float, default=0.0,
                   help="accuracy a cheaper model may give up and still win (0.02 = 2 points)")
    p.set_defaults(func=cmd_eval_skills)

    p = sub.add_parser("drill", help="send one stage's traffic to its secondary model and report what broke")
    dispatch_args(p)
    p.add_argument("--stage", default="extraction", choices=["routing", "extraction", "formatting", "diagnostic"])
    p.set_defaults(func=cmd_drill)

    p = sub.add_parser("bench", help="benchmarks")
    bsub = p.add_subparsers(dest="bench_command", required=True)
    b = bsub.add_parser("compare", help="tiered-router vs semantic-router vs an LLM every turn, "
                                        "on CLINC150 and BANKING77; writes a report")
    _add_bench_args(b)
    _add_quiet(b)
    b.set_defaults(func=cmd_bench_compare)

    p = sub.add_parser("models", help="model files")
    msub = p.add_subparsers(dest="models_command", required=True)
    e = msub.add_parser("export", help="write the ONNX file of a safetensors model into models/cache/")
    e.add_argument("model", nargs="?", default="minilm-l6-fp32")
    e.set_defaults(func=cmd_models_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 ok, 1 a ``RouterError`` (its message on stderr), 2 a usage error (argparse), 130 Ctrl-C."""
    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        return int(args.func(args))
    except RouterError as exc:
        print(f"router: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before `serve` has its own handlers, or during a build: no traceback
        print("router: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
