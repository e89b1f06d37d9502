"""Validate the custom resources of rendered manifests against the vendored CRD JSON schemas.

Run by tests/static/test_chart.py with the chart-tools venv's Python (jsonschema lives there, not in
the project's venv): `python crd_validate.py SCHEMA_DIR MANIFEST`. Prints one line per error and
per checked object; exit 1 on any error or on a custom resource without a schema.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import yaml

BUILT_IN_GROUPS = {"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1",
                   "rbac.authorization.k8s.io/v1"}  # fmt: skip


def main(schema_dir: Path, manifest: Path) -> int:
    errors = 0
    for doc in yaml.safe_load_all(manifest.read_text()):
        if not doc or doc.get("apiVersion") in BUILT_IN_GROUPS:
            continue
        group, version = doc["apiVersion"].split("/")
        schema_file = schema_dir / f"{doc['kind'].lower()}_{version}.json"
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if not schema_file.is_file():
            print(f"{name}: no vendored schema {schema_file.name} for {group}")
            errors += 1
            continue
        schema = json.loads(schema_file.read_text())
        found = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
        for error in found:
            print(f"{name}: {'.'.join(map(str, error.path))}: {error.message}")
        errors += len(found)
        print(f"{name}: {'invalid' if found else 'valid'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
