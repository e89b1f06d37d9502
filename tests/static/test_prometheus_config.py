"""prometheus/prometheus.yml passes promtool and scrapes the documented endpoints.

The alert rules and their unit tests: test_alert_rules.py.
"""

import subprocess
from pathlib import Path

import pytest
import yaml

from infra.stack import loopback_prometheus_config

PROMETHEUS = Path(__file__).resolve().parents[2] / "prometheus"
MOUNT = "/etc/prometheus"  # where docker-compose.yml mounts prometheus/


def promtool(require_tool, *args: str) -> None:
    require_tool("promtool", "--version")
    result = subprocess.run(["promtool", *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", ["compose", "loopback"])
def test_config_is_valid(require_tool, tmp_path: Path, variant: str) -> None:
    """Checked on a copy whose rule_files point into the repo instead of the container mount; the
    loopback stack's variant as `make up` writes it (infra/stack.py), for three replicas."""
    text = (PROMETHEUS / "prometheus.yml").read_text()
    config = yaml.safe_load(text if variant == "compose" else loopback_prometheus_config(3))
    if variant == "loopback":
        (gateway,) = [job for job in config["scrape_configs"] if job["job_name"] == "gateway"]
        assert gateway["static_configs"] == [{"targets": ["gateway:9100", "gateway:9101", "gateway:9102"]}]
        assert "dns_sd_configs" not in gateway
        others = [job for job in config["scrape_configs"] if job["job_name"] != "gateway"]
        assert others == [
            job for job in yaml.safe_load(text)["scrape_configs"] if job["job_name"] != "gateway"
        ]
    config["rule_files"] = [p.replace(MOUNT, str(PROMETHEUS), 1) for p in config["rule_files"]]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    promtool(require_tool, "check", "config", str(copy))


def test_scrapes_the_documented_endpoints() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {
        name: [t for sc in job.get("static_configs", []) for t in sc["targets"]]
        + [f"{n}:{sd['port']}" for sd in job.get("dns_sd_configs", []) for n in sd["names"]]
        for name, job in jobs.items()
    }
    assert targets["prometheus"] == ["localhost:9090"]
    assert targets["mlflow"] == ["mlflow:5000"]
    # Every replica by DNS (one address per container), each on its own metrics port: internal only.
    assert targets["gateway"] == ["gateway:9100"] and jobs["gateway"]["dns_sd_configs"][0]["type"] == "A"
    assert targets["monitor"] == ["monitor:8001"]
    assert targets["orchestrator"] == ["orchestrator:8002"]
    assert targets["reports"] == ["reports:8003"]
    assert targets["alertmanager"] == ["alertmanager:9093"]
    assert targets["cadvisor"] == ["cadvisor:8080"]
    managers = [
        t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]
    ]
    assert managers == ["alertmanager:9093"]
    assert jobs["mlflow"].get("metrics_path", "/metrics") == "/metrics"
    assert config["global"]["scrape_interval"] == "15s"
    assert config["rule_files"] == [f"{MOUNT}/rules/*.yml"]
