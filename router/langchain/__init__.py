"""LangChain: the router as a Runnable, and a per-intent router of Runnables (the ``[langchain]`` extra).

``DecisionRunnable(router)`` is a ``Runnable`` whose output is the ``Decision``: ``invoke``/``ainvoke`` call
``Router.classify``/``aclassify``, ``batch``/``abatch`` one ``classify_many``/``aclassify_many``.
``route_by_intent(router, routes, fallback)`` (an ``IntentRouter``) classifies the input and runs the
Runnable of its intent (or of the intent's skill) on the original input; ``decision_from(config)`` reads
that Decision back inside the route. Both take a str, a dict (its ``"text"`` key, or ``key=``), a message,
a list of messages or a prompt value (the last human message's text).

Importing this package needs langchain-core (``pip install 'tiered-router[langchain]'``); ``import router``
never imports it.
"""

from router.errors import MissingDependency

try:
    import langchain_core  # noqa: F401
except ImportError as exc:  # the extra is not installed: say which one
    raise MissingDependency(
        f"router.langchain needs langchain-core, from the [langchain] extra ({exc.name} is not installed): "
        "pip install 'tiered-router[langchain]'"
    ) from exc

from router.langchain._routes import IntentRouter, decision_from, route_by_intent  # noqa: E402
from router.langchain._runnable import DecisionRunnable, RouterInput  # noqa: E402

__all__ = ["IntentRouter", "RouterInput", "DecisionRunnable", "decision_from", "route_by_intent"]
