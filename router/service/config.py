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
    max_body_bytes: int = Field(1_048_576, ge=64, le=1 << 30)
    request_timeout_s: float = Field(10.0, gt=0, le=3600)
    max_in_flight: int = Field(256, ge=1, le=1_000_000)
    retry_after_s: int = Field(1, ge=1, le=3600)
    # The skill dispatcher (POST /v1/dispatch): on when `skills` names a module:registry; `routing`
    # is merged over the shipped routing file.
    skills: str | None = None
    routing: str | None = None
    # Bearer token read from this environment variable; unset = no auth.
    api_key_env: str | None = None
    # On SIGTERM readiness goes false, then after drain_delay_s the server stops accepting and
    # waits up to shutdown_grace_s for requests in flight.
    drain_delay_s: float = Field(0.5, ge=0.0, le=600)
    shutdown_grace_s: int = Field(10, ge=0, le=3600)
