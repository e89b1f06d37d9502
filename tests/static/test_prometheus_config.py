"""prometheus/: the config, the alert rules and their unit tests pass promtool."""

import subprocess
from pathlib import Path

import yaml

PROMETHEUS = Path(__file__).resolve().parents[2] / "prometheus"
MOUNT = "/etc/prometheus"  # where docker-compose.yml mounts prometheus/
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))


def promtool(require_tool, *args: str) -> None:
    require_tool("promtool", "--version")
    result = subprocess.run(["promtool", *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_config_is_valid(require_tool, tmp_path: Path) -> None:
    """Checked on a copy whose rule_files point into the repo instead of the container mount."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["rule_files"] = [p.replace(MOUNT, str(PROMETHEUS), 1) for p in config["rule_files"]]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    promtool(require_tool, "check", "config", str(copy))


def test_scrapes_the_documented_endpoints() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {name: [t for sc in job["static_configs"] for t in sc["targets"]] for name, job in jobs.items()}
    assert targets["prometheus"] == ["localhost:9090"]
    assert targets["mlflow"] == ["mlflow:5000"]
    assert jobs["mlflow"].get("metrics_path", "/metrics") == "/metrics"
    assert config["global"]["scrape_interval"] == "15s"
    assert config["rule_files"] == [f"{MOUNT}/rules/*.yml"]


def test_rules_are_valid(require_tool) -> None:
    assert RULE_FILES, "prometheus/rules/ holds no rule files"
    promtool(require_tool, "check", "rules", *map(str, RULE_FILES))


def test_rules_follow_conventions() -> None:
    """snake_case names, a `for:`, a severity and templated summary/description (STYLE.md)."""
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                name = rule["alert"]
                assert name == name.lower() and " " not in name, f"{path.name}: {name}"
                assert "for" in rule, f"{name} has no `for:`"
                assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
                assert {"summary", "description"} <= rule["annotations"].keys(), name


def test_rule_unit_tests_pass(require_tool) -> None:
    tests = sorted((PROMETHEUS / "rules" / "tests").glob("*_test.yml"))
    assert tests, "prometheus/rules/tests/ holds no rule unit tests"
    promtool(require_tool, "test", "rules", *map(str, tests))
