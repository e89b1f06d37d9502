"""grafana/: provisioning files parse and dashboards only use provisioned datasources."""

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import yaml

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
PROVISIONING = sorted((GRAFANA / "provisioning").rglob("*.y*ml"))
DASHBOARDS = sorted((GRAFANA / "dashboards").rglob("*.json"))
ENV_REFERENCE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def datasources() -> dict[str, str]:
    """uid -> type of every provisioned datasource."""
    found = {}
    for path in (GRAFANA / "provisioning" / "datasources").glob("*.y*ml"):
        for ds in load_yaml(path).get("datasources", []):
            assert ds["uid"] not in found, f"datasource uid {ds['uid']} provisioned twice"
            found[ds["uid"]] = ds["type"]
    return found


def panels(dashboard: dict) -> Iterator[dict]:
    """Every panel, including those nested in collapsed rows; rows themselves are skipped."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panels(panel)
        else:
            yield panel


def test_provisioning_yaml_parses() -> None:
    assert PROVISIONING, "grafana/provisioning holds no files"
    for path in PROVISIONING:
        assert load_yaml(path)["apiVersion"] == 1, path


def test_dashboards_parse_with_unique_uids() -> None:
    assert DASHBOARDS, "grafana/dashboards holds no dashboards"
    uids = [json.loads(path.read_text())["uid"] for path in DASHBOARDS]
    assert all(uids) and len(set(uids)) == len(uids), uids


def test_panels_use_provisioned_datasources() -> None:
    """Each panel and query names its datasource as {type, uid} with a provisioned uid."""
    known = datasources()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        queried = [v for v in dashboard.get("templating", {}).get("list", []) if "datasource" in v]
        for item in [*panels(dashboard), *queried]:
            for ref in [item["datasource"], *(t.get("datasource") for t in item.get("targets", []))]:
                where = f"{path.name}: {item.get('title') or item.get('name')}"
                assert isinstance(ref, dict), f"{where}: datasource must be {{type, uid}}, got {ref!r}"
                assert ref["uid"] in known, f"{where}: unknown datasource uid {ref['uid']!r}"
                assert ref["type"] == known[ref["uid"]], f"{where}: wrong type for {ref['uid']}"


def test_dashboard_promql_parses(require_tool, tmp_path: Path) -> None:
    """promtool parses every Prometheus query (as recording rules), so typos fail here."""
    known = datasources()
    exprs = [
        target["expr"]
        for path in DASHBOARDS
        for panel in panels(json.loads(path.read_text()))
        for target in panel.get("targets", [])
        if known.get(target["datasource"]["uid"]) == "prometheus"
    ]
    assert exprs, "no dashboard queries Prometheus"
    rules = [
        {"record": f"dashboard:query{i}", "expr": re.sub(r"\$__\w+", "1m", e)} for i, e in enumerate(exprs)
    ]
    rules_file = tmp_path / "dashboard_queries.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    require_tool("promtool", "--version")
    result = subprocess.run(["promtool", "check", "rules", str(rules_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_mounts_provisioning_and_passes_its_variables(compose_config: dict) -> None:
    grafana = compose_config["services"]["grafana"]
    mounts = {v["target"]: Path(v["source"]) for v in grafana["volumes"] if v["type"] == "bind"}
    assert mounts["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    for path in (GRAFANA / "provisioning" / "dashboards").glob("*.y*ml"):
        for provider in load_yaml(path)["providers"]:
            assert mounts.get(provider["options"]["path"]) == GRAFANA / "dashboards", provider
    for path in PROVISIONING:
        for name in ENV_REFERENCE.findall(path.read_text()):
            assert name in grafana["environment"], f"{path.name} uses ${name}, compose never sets it"
