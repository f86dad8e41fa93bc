"""The shipped alert rules (router/service/alerts.yml): promtool checks them and runs their unit tests
(tests/fixtures/alerts_test.yml), every metric they read is in /metrics of a running service with
dispatch and tier 2 on, and `router alerts` prints them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import router.service
from router._cli import main
from router.testing import FakeVLLM
from tests.dispatch.conftest import Fakes, anyio_backend, fakes  # noqa: F401 - fixtures
from tests.service.test_metrics import llm, observed  # noqa: F401 - fixtures

RULES = Path(router.service.__file__).with_name("alerts.yml")
UNIT_TESTS = Path(__file__).parents[1] / "fixtures" / "alerts_test.yml"
# A metric name in an expression: not part of a recording rule's name (level:metric:operations).
METRIC = re.compile(r"(?<![\w:])router_[a-z0-9_]+(?![\w:])")


def _rules() -> list[dict[str, object]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed: `apt-get install prometheus` (Debian/Ubuntu; .ci/run does), "
                    "or put the promtool of a Prometheus release on PATH")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.tools
def test_promtool_checks_the_rules() -> None:
    done = _promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.tools
def test_the_rules_unit_tests_pass() -> None:
    done = _promtool("test", "rules", str(UNIT_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_each_alert_has_a_severity_a_summary_a_description_and_a_wait() -> None:
    alerts = [rule for rule in _rules() if "alert" in rule]
    assert {a["alert"] for a in alerts} == {
        "RouterSessionCostHigh", "RouterSkillFailureRateHigh", "RouterToolFailureRateHigh",
        "RouterStageLatencyOverBudget", "RouterDispatchLatencyOverBudget", "RouterFallbackRateRising",
        "RouterEscalationRateRising", "RouterTier2BreakerOpen", "RouterProviderBreakerOpen"}
    for alert in alerts:
        assert alert["labels"]["severity"] in ("warning", "critical"), alert  # type: ignore[index]
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], alert  # type: ignore[index]
        assert alert.get("for"), alert
    # Every alert is tested by the promtool unit tests.
    tested = set(re.findall(r"alertname: (\w+)", UNIT_TESTS.read_text()))
    assert tested == {a["alert"] for a in alerts}


def test_every_metric_the_rules_read_is_served(observed: httpx.Client, fakes: Fakes,  # noqa: F811
                                               llm: FakeVLLM) -> None:  # noqa: F811
    used = {name for rule in _rules() for name in METRIC.findall(str(rule["expr"]))}
    assert "router_provider_attempt_seconds_bucket" in used and "router_llm_breaker_open" in used
    client = observed
    fakes.openai.fault("500")  # a fallback
    pending = client.post("/v1/dispatch", json={"session_id": "u", "skill": "transfer",
                                                "params": {"amount": 5, "to_account": "ann"}}).json()
    client.post("/v1/dispatch", json={"session_id": "u", "text": "send 20 dollars to sam"})
    client.post(f"/v1/approvals/{pending['approval_id']}/approve")  # a handler run
    client.post("/v1/classify", json={"text": "clock"})  # an escalation
    served = {sample.name for family in text_string_to_metric_families(client.get("/metrics").text)
              for sample in family.samples}
    assert used - served == set()


def test_router_alerts_prints_the_shipped_rules(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["alerts"]) == 0
    assert capsys.readouterr().out == RULES.read_text()
