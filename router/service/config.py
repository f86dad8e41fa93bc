"""`router serve` settings: every limit has a default (pydantic, unknown keys rejected)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    index: str = "default"
    # Where index names are looked up; None: $ROUTER_INDEX_DIR, then ./indexes (router/paths.py).
    index_dir: str | None = None
    # ONNX Runtime threads for the encoder; None: one per core, at most 4. The encoder is the
    # bottleneck under load, and on 2 cores 2 threads gave 670 vs 430 requests/s at concurrency 64.
    encoder_threads: int | None = Field(None, ge=1, le=256)
    # Query-embedding LRU cache; None keeps the index's setting (4,096 by default).
    encoder_cache_size: int | None = Field(None, ge=0, le=10_000_000)
    # Tier 1a (the static token table): None serves it when the index has one; False skips it.
    static: bool | None = None
    # Micro-batching: single-text requests arriving within the window are encoded together.
    batch_window_ms: float = Field(2.0, ge=0.0, le=1000.0)
    batch_max: int = Field(32, ge=1, le=4096)
    # Fair queueing at the encoder: one encoder job holds at most batch_max texts and batch_max_tokens
    # tokens, counted as texts x the longest text's tokens (the encoder pads to it). A `texts` batch
    # is split into such jobs, which take turns with other requests' (batcher.py), so it cannot hold
    # the encoder, and its memory, for the whole batch. A text longer than this is a job of its own.
    # 64 is about four typical queries: a single text waits for at most one such job, and on a CPU
    # small jobs cost no more per text (5.6 ms on 2 cores, vs 6.6 ms for one job per batch: it pads more).
    batch_max_tokens: int = Field(64, ge=1, le=1_000_000)
    max_body_bytes: int = Field(1_048_576, ge=64, le=1 << 30)
    request_timeout_s: float = Field(10.0, gt=0, le=3600)
    max_in_flight: int = Field(256, ge=1, le=1_000_000)
    # /v1/dispatch, the approval and the session routes have their own cap, so dispatches stuck on
    # a slow provider cannot starve /v1/classify (and classify traffic cannot starve dispatch).
    # /healthz, /readyz and /metrics are under neither cap.
    max_dispatch_in_flight: int = Field(64, ge=1, le=1_000_000)
    retry_after_s: int = Field(1, ge=1, le=3600)
    # Slow and idle clients: a request's headers must arrive within header_timeout_s (from the
    # connection opening, or from the first byte after a response) and be at most
    # max_header_bytes; its body within body_timeout_s of the headers. A connection idle after a
    # response is closed after keep_alive_timeout_s (uvicorn's own timeout_keep_alive). That one
    # stays above the idle timeout of the clients and proxies in front (httpx 5 s, AWS ALB 60 s):
    # a server that closes first can cut a request already on its way, and the client sees a reset.
    header_timeout_s: float = Field(10.0, gt=0, le=3600)
    max_header_bytes: int = Field(32_768, ge=1024, le=1 << 24)
    body_timeout_s: float = Field(5.0, gt=0, le=3600)
    keep_alive_timeout_s: int = Field(75, ge=1, le=3600)
    # The skill dispatcher (POST /v1/dispatch): on when `skills` names a module:registry; `model_routing`
    # is merged over the shipped model-routing file.
    skills: str | None = None
    model_routing: str | None = None
    # Bearer token read from this environment variable; unset = no auth.
    api_key_env: str | None = None
    # On SIGTERM readiness goes false, then after drain_delay_s the server stops accepting and
    # waits up to shutdown_grace_s for requests in flight.
    drain_delay_s: float = Field(0.5, ge=0.0, le=600)
    shutdown_grace_s: int = Field(10, ge=0, le=3600)
