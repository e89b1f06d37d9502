"""Alerting: prometheus/rules/ (promtool) and prometheus/alertmanager/alertmanager.yml (amtool).

Every alert follows the conventions, uses only metrics of the contract (docs/monitoring.md), has
unit tests that show it firing and staying silent, and is routed to the monitor's webhook.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from services.orchestrator.settings import RetrainSettings

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "prometheus" / "rules"
RULE_FILES = sorted(RULES.glob("*.yml"))
RULE_TESTS = sorted((RULES / "tests").glob("*_test.yml"))
ALERTMANAGER_CONFIG = REPO / "prometheus" / "alertmanager" / "alertmanager.yml"
CONTRACT = (REPO / "docs" / "monitoring.md").read_text()
# Our metric namespaces; histogram series carry a suffix the contract does not repeat.
OUR_METRIC = re.compile(r"\b(?:gateway|mlops|container)_[a-z0-9_]+")
HISTOGRAM_SUFFIX = re.compile(r"_(?:bucket|sum|count)$")


def run(require_tool: Callable[..., None], *argv: str) -> str:
    require_tool(argv[0], "--version")
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def alert_rules() -> list[tuple[Path, dict]]:
    return [
        (path, rule)
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_rules_are_valid(require_tool) -> None:  # type: ignore[no-untyped-def]
    assert RULE_FILES, "prometheus/rules/ holds no rule files"
    run(require_tool, "promtool", "check", "rules", *map(str, RULE_FILES))


def test_rule_unit_tests_pass(require_tool) -> None:  # type: ignore[no-untyped-def]
    assert RULE_TESTS, "prometheus/rules/tests/ holds no rule unit tests"
    run(require_tool, "promtool", "test", "rules", *map(str, RULE_TESTS))


def test_rules_follow_conventions() -> None:
    """One group per file named after it, snake_case names, a `for:`, a severity, templated
    summary/description (STYLE.md)."""
    names = []
    for path in RULE_FILES:
        groups = yaml.safe_load(path.read_text())["groups"]
        assert [g["name"] for g in groups] == [path.stem], f"{path.name}: one group named {path.stem}"
    for path, rule in alert_rules():
        name = rule["alert"]
        names.append(name)
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name), f"{path.name}: {name} is not snake_case"
        assert "for" in rule, f"{name} has no `for:`"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert {"summary", "description"} <= rule["annotations"].keys(), name
        assert "{{" in rule["annotations"]["summary"], f"{name}: the summary names no label"
    assert len(names) == len(set(names)), "alert names must be unique"


def test_rules_use_only_contract_metrics() -> None:
    """Every gateway_/mlops_/container_ metric a rule reads is in docs/monitoring.md."""
    for path, rule in alert_rules():
        text = rule["expr"] + " ".join(rule["annotations"].values())
        for metric in set(OUR_METRIC.findall(text)):
            base = HISTOGRAM_SUFFIX.sub("", metric)
            assert f"`{base}" in CONTRACT, f"{path.name}: {rule['alert']} reads {metric}, not in the contract"


def test_every_rule_file_has_its_unit_tests() -> None:
    for path in RULE_FILES:
        tests = RULES / "tests" / f"{path.stem}_test.yml"
        assert tests.exists(), f"{path.name} has no {tests.relative_to(REPO)}"
        assert f"../{path.name}" in yaml.safe_load(tests.read_text())["rule_files"], tests.name


def test_every_alert_is_tested_firing_and_silent() -> None:
    """Each alert has a unit test where it fires and one where it stays silent."""
    cases: dict[str, set[bool]] = {}
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    for path, rule in alert_rules():
        assert cases.get(rule["alert"]) == {True, False}, (
            f"{path.name}: {rule['alert']} needs a test where it fires and one where it is silent"
        )


# --- Alertmanager ---------------------------------------------------------------------------------


def test_alertmanager_config_is_valid(require_tool) -> None:  # type: ignore[no-untyped-def]
    run(require_tool, "amtool", "check-config", str(ALERTMANAGER_CONFIG))


ALERTS = {rule["alert"]: rule for _, rule in alert_rules()}


# The alerts the orchestrator retrains on (its RETRAIN_ON_ALERTS default, services/orchestrator).
RETRAINING_ALERTS = set(RetrainSettings.model_fields["on_alerts"].default)


@pytest.mark.parametrize("alertname", sorted(ALERTS))
def test_every_alert_reaches_the_monitor_and_retraining_alerts_the_orchestrator(  # type: ignore[no-untyped-def]
    require_tool, alertname: str
) -> None:
    labels = {"alertname": alertname, "model": "latency-predictor", **ALERTS[alertname]["labels"]}
    routed = run(
        require_tool, "amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}",
        *(f"{key}={value}" for key, value in labels.items()),
    )  # fmt: skip
    expected = ["orchestrator", "monitor"] if alertname in RETRAINING_ALERTS else ["monitor"]
    assert sorted(routed.replace(",", " ").split()) == sorted(expected), routed


def test_every_retraining_alert_exists() -> None:
    assert set(ALERTS) >= RETRAINING_ALERTS


def test_the_monitor_receives_resolved_alerts_too() -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    [webhook] = receivers["monitor"]["webhook_configs"]
    assert {key: webhook[key] for key in ("url", "send_resolved")} == {
        "url": "http://monitor:8001/alerts",
        "send_resolved": True,
    }
    assert config["route"]["group_by"] == ["alertname", "model"]


def test_every_webhook_sends_the_control_token_from_alertmanagers_secret() -> None:
    """The monitor's and the orchestrator's /alerts need the control token (contracts/guard.py):
    Alertmanager sends it as `Authorization: Bearer`, read from the compose secret mounted into it."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    [mounted] = compose["services"]["alertmanager"]["secrets"]
    webhooks = [w for r in config["receivers"] for w in r.get("webhook_configs", [])]
    assert len(webhooks) == 2
    for webhook in webhooks:
        assert webhook["http_config"] == {"authorization": {"credentials_file": f"/run/secrets/{mounted}"}}
    assert compose["secrets"][mounted] == {"file": f"./.secrets/{mounted}"}
