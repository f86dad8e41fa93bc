"""`router serve` settings: every limit has a default; unknown keys are rejected.

Each field is also read from the environment as ``ROUTER_SERVE_<FIELD>``; a command-line flag
(``--<field-with-dashes>``, generated from this model by ``router.cli``) wins over the variable, and
the variable over the default. An empty variable counts as unset. The variables:

    ROUTER_SERVE_HOST, ROUTER_SERVE_PORT, ROUTER_SERVE_INDEX, ROUTER_SERVE_INDEX_DIR,
    ROUTER_SERVE_ENCODER_THREADS, ROUTER_SERVE_ENCODER_CACHE_SIZE, ROUTER_SERVE_STATIC (true/false),
    ROUTER_SERVE_BATCH_WINDOW_MS, ROUTER_SERVE_BATCH_MAX, ROUTER_SERVE_BATCH_MAX_TOKENS,
    ROUTER_SERVE_MAX_BODY_BYTES, ROUTER_SERVE_REQUEST_TIMEOUT_S, ROUTER_SERVE_MAX_IN_FLIGHT,
    ROUTER_SERVE_MAX_DISPATCH_IN_FLIGHT, ROUTER_SERVE_RETRY_AFTER_S, ROUTER_SERVE_HEADER_TIMEOUT_S,
    ROUTER_SERVE_MAX_HEADER_BYTES, ROUTER_SERVE_BODY_TIMEOUT_S, ROUTER_SERVE_KEEP_ALIVE_TIMEOUT_S,
    ROUTER_SERVE_SKILLS, ROUTER_SERVE_MODEL_ROUTING, ROUTER_SERVE_API_KEY_ENV,
    ROUTER_SERVE_APPROVER_KEY_ENV, ROUTER_SERVE_ALLOW_SELF_APPROVAL (true/false),
    ROUTER_SERVE_DRAIN_DELAY_S, ROUTER_SERVE_SHUTDOWN_GRACE_S, ROUTER_SERVE_WORKERS, ROUTER_SERVE_STATE,
    ROUTER_SERVE_OTLP_ENDPOINT, ROUTER_SERVE_OTEL_SERVICE_NAME, ROUTER_SERVE_LEARNING,
    ROUTER_SERVE_FEEDBACK (true/false), ROUTER_SERVE_LEARN_LOG, ROUTER_SERVE_PROXY (true/false).

A variable with the prefix that names no field is an error, as an unknown key is (a typo would
otherwise leave the default in force). ``api_key_env`` names the variable holding the bearer token,
``approver_key_env`` the approvers'; a token itself is never a setting. ``load_serve_config`` builds
the config and turns a bad value into a ``ConfigError`` naming the flag or the variable and the value.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from router._settings import environ, environ_names
from router._strict import format_validation_error
from router.errors import ConfigError

ENV_PREFIX = "ROUTER_SERVE_"


class ServeConfig(BaseSettings):
    model_config = SettingsConfigDict(extra="forbid", env_prefix=ENV_PREFIX, env_ignore_empty=True)

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on")
    index: str = Field("default", description="index name or folder")
    index_dir: str | None = Field(None, description="folder of named indexes (default: $ROUTER_INDEX_DIR, "
                                                    "else ./indexes)")
    # The encoder is the bottleneck under load, and on 2 cores 2 threads gave 670 vs 430 requests/s
    # at concurrency 64.
    encoder_threads: int | None = Field(None, ge=1, le=256,
                                        description="ONNX Runtime threads (default: one per core, at most 4), per "
                                                    "worker: with --workers N, each one's share, cores / N, at "
                                                    "least 1")
    encoder_cache_size: int | None = Field(None, ge=0, le=10_000_000,
                                           description="query-embedding cache entries, 0: off (default: the "
                                                       "index's, 4096 unless built otherwise)")
    static: bool | None = Field(None, description="serve tier 1a, the static token table: on, off, or auto "
                                                  "(the default: on when the index has one)")
    batch_window_ms: float = Field(2.0, ge=0.0, le=1000.0,
                                   description="micro-batch window: single-text requests arriving within it "
                                               "are encoded together")
    batch_max: int = Field(32, ge=1, le=4096, description="texts per micro-batch")
    # Fair queueing at the encoder: one encoder job holds at most batch_max texts and batch_max_tokens
    # tokens (batcher.py), so a `texts` batch cannot hold the encoder, and its memory, for the whole
    # batch. A text longer than this is a job of its own. 64 is about four typical queries: a single
    # text waits for at most one such job, and on a CPU small jobs cost no more per text (5.6 ms on
    # 2 cores, vs 6.6 ms for one job per batch: it pads more).
    batch_max_tokens: int = Field(64, ge=1, le=1_000_000,
                                  description="tokens per encoder job (texts x the longest); a bigger batch is "
                                              "split into jobs that take turns with other requests'")
    max_body_bytes: int = Field(1_048_576, ge=64, le=1 << 30, description="request bodies over this size get 413")
    request_timeout_s: float = Field(10.0, gt=0, le=3600, description="per-request timeout in seconds")
    max_in_flight: int = Field(256, ge=1, le=1_000_000, description="requests in flight before 503")
    # A separate cap, so dispatches stuck on a slow provider cannot starve /v1/classify (and classify
    # traffic cannot starve dispatch). /healthz, /readyz and /metrics are under neither cap.
    max_dispatch_in_flight: int = Field(64, ge=1, le=1_000_000,
                                        description="dispatch, approval and session requests in flight before 503")
    retry_after_s: int = Field(1, ge=1, le=3600, description="Retry-After seconds sent with a 503")
    # Slow and idle clients. Header time counts from the connection opening, or from the first byte
    # after a response. keep_alive_timeout_s is uvicorn's timeout_keep_alive; it stays above the idle
    # timeout of the clients and proxies in front (httpx 5 s, AWS ALB 60 s): a server that closes
    # first can cut a request already on its way, and the client sees a reset.
    header_timeout_s: float = Field(10.0, gt=0, le=3600,
                                    description="seconds a request's headers may take to arrive, then 408")
    max_header_bytes: int = Field(32_768, ge=1024, le=1 << 24, description="request headers over this size get 431")
    body_timeout_s: float = Field(5.0, gt=0, le=3600,
                                  description="seconds a request's body may take to arrive, then 408")
    keep_alive_timeout_s: int = Field(75, ge=1, le=3600,
                                      description="an idle kept-alive connection is closed after this")
    skills: str | None = Field(None, description="module:registry of skills; turns on POST /v1/dispatch "
                                                 "(e.g. router.dispatch.demo:registry)")
    model_routing: str | None = Field(None, description="model-routing file for the dispatcher, merged over "
                                                        "the shipped one")
    # The proxy (router/service/proxy/): the chat routes go through the dispatcher's chain; without --skills the
    # dispatcher has no skills (POST /v1/dispatch then answers no_skill), its budgets and sessions still apply.
    proxy: bool = Field(False, description="serve POST /v1/chat/completions (OpenAI), POST /v1/messages "
                                           "(Anthropic) and GET /v1/models: model \"auto\" routes each chat by "
                                           "its intent to the model-routing file's chat stage")
    api_key_env: str | None = Field(None, description="require 'Authorization: Bearer <value of this env var>' "
                                                      "(default: no auth)")
    # Approvals need their own credential (service/_guard.py): an agent holding the service key must not
    # approve its own writes. With a `writes` skill and no approver key, serve refuses to start.
    approver_key_env: str | None = Field(None, description="approve and reject need 'Authorization: Bearer <value "
                                                           "of this env var>', and the service key is refused "
                                                           "there (required when a skill writes)")
    allow_self_approval: bool = Field(False, description="start without an approver key although a skill writes: "
                                                         "the service key approves (logged as a warning)")
    # One port, N processes (service/_workers.py). Each worker has its own micro-batcher, encoder threads and
    # metrics; budgets, approvals and breakers are shared only through a shared state (--state redis://...).
    workers: int = Field(1, ge=1, le=64, description="worker processes serving the one port; above 1 with "
                                                     "--skills needs a shared --state")
    state: str | None = Field(None, description="shared state of the dispatcher (budgets, approvals, breakers): "
                                                "memory, or redis://host:port/db; overrides the model-routing "
                                                "file's state.url (default: the file's, memory)")
    # Draining: readiness goes false first, so a load balancer stops sending before the listener closes.
    drain_delay_s: float = Field(0.5, ge=0.0, le=600,
                                 description="on SIGTERM, seconds between readiness going false and the "
                                             "server no longer accepting")
    shutdown_grace_s: int = Field(10, ge=0, le=3600,
                                  description="then, seconds to wait for requests in flight")
    # OpenTelemetry (router/_telemetry.py, the [otel] extra): off unless an endpoint is given, here or by the
    # standard OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT variables.
    otlp_endpoint: str | None = Field(None, pattern=r"^https?://[^/\s]+", max_length=2048,
                                      description="export spans over OTLP/HTTP to this collector, e.g. "
                                                  "http://127.0.0.1:4318 (/v1/traces is appended; default: "
                                                  "$OTEL_EXPORTER_OTLP_ENDPOINT, else no spans)")
    otel_service_name: str | None = Field(None, min_length=1, max_length=256,
                                          description="service.name of the exported spans (default: "
                                                      "$OTEL_SERVICE_NAME, else tiered-router)")

    # Learning (router/learn/): each None keeps the index config's `learning:` section. The log is a file
    # shared by the workers of one host; with --state redis://... it is a Redis stream every replica shares.
    learning: Literal["off", "review", "auto"] | None = Field(
        None, description="tier 2's answers: off (not learned), review (queued for a person: GET /v1/review), "
                          "auto (learned when confident) (default: the index config's learning.mode, off unless "
                          "built otherwise)")
    # Feedback changes what the router answers: never open to the network by default (service/learn/_serving.py).
    feedback: bool | None = Field(None, description="take POST /v1/feedback. auto (the default): on with "
                                                    "--api-key-env (unless the index config's learning.feedback "
                                                    "is false), off without one: the learning routes then answer "
                                                    "403. on without --api-key-env: anyone who reaches the port "
                                                    "can teach the router (logged as a warning at start). With "
                                                    "--approver-key-env, source human, override and the review "
                                                    "decisions need the approver key")
    learn_log: str | None = Field(None, min_length=1, max_length=4096,
                                  description="the learned-examples log, JSON lines (default: the index config's "
                                              "learning.log, else <index>.learned.jsonl beside the index; with "
                                              "--state redis://... a Redis stream instead)")

    @model_validator(mode="after")
    def _no_unknown_variables(self) -> ServeConfig:
        unknown = [name for name in environ_names(ENV_PREFIX)
                   if name[len(ENV_PREFIX):].lower() not in type(self).model_fields]
        if unknown:
            raise ValueError(f"unknown environment variable(s) {', '.join(sorted(unknown))}: no such setting")
        return self


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def load_serve_config(given: dict[str, Any], source: str = "router serve") -> ServeConfig:
    """``ServeConfig`` from ``given`` (flags that were set) over the environment over the defaults; a bad
    value is a ``ConfigError`` naming the field, the value and, when it came from one, the variable."""
    try:
        return ServeConfig(**given)
    except ValidationError as exc:
        message = format_validation_error(exc, source)
        from_env = sorted({str(err["loc"][0]) for err in exc.errors() if err["loc"]} - set(given))
        named = [f"{env_name(f)}={value!r}" for f in from_env if (value := environ(env_name(f))) is not None]
        if named:
            message += f" (set in the environment: {', '.join(named)})"
        raise ConfigError(message) from exc
