"""``router bench compare``: tiered-router against the routers users would use instead, in one run.

On CLINC150 and BANKING77, with one encoder (MiniLM, ONNX) and one process, it measures:
(a) tiers 0-1, (b) tiers 0-1 plus the tier-2 LLM, (c) aurelio-labs semantic-router with its
default threshold and after its own fitting, (d) the tier-2 LLM asked about every query; then
the vector index from 1k to 1M examples, exact and HNSW. It writes ``report.md``,
``results.json`` and PNG plots to the folder given on the command line.

Modules: ``data`` (splits, slices, samples), ``methods`` (the Method protocol and registry, one
module per method), ``metrics``, ``cost``, ``scaling``, ``runner``, ``report``, ``plots``, ``cli``.
"""

from router.bench._runner import CompareConfig, run_compare

__all__ = ["CompareConfig", "run_compare"]
