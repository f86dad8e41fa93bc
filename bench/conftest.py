"""Benchmarks run on the built-in default index (CLINC150), built here if missing."""

from __future__ import annotations

import pytest

from router import Builder, EncoderConfig, Router, RouterConfig
from router.paths import indexes_dir

QUERY = "what is my bank balance"


@pytest.fixture(scope="session")
def router() -> Router:
    folder = indexes_dir() / "default"
    if not (folder / "manifest.json").is_file():
        Builder(RouterConfig(name="default", dataset="clinc150")).build(folder)
    # One thread, no query cache: the cost of a query the router has not seen.
    return Router.load(folder, encoder=EncoderConfig(threads=1, cache_size=0))
