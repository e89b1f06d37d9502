"""The pages' Jinja2 templates, their one stylesheet (inline: a report must open without network)
and the security policy every page carries.

Element ids are stable: the browser tests and docs/reports.md refer to them. Text from MLflow is
participant text: the templates are rendered with autoescape (services/reports/report.py `ENV`), ids
built from it go through `dom_id`, and the pages run no script (`CSP`).
"""

import base64
import hashlib
import re

BASE_CSS = """
body { font-family: "DejaVu Sans", Arial, sans-serif; color: #111; margin: 1.5rem auto; max-width: 72rem;
       padding: 0 1rem; line-height: 1.4; font-size: 14px; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { border-bottom: 2px solid #333; padding-bottom: .2rem;
       margin-top: 2rem; } h3 { margin-bottom: .3rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: 13px; }
th, td { border: 1px solid #bbb; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #eee; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { font-weight: bold; } .muted { color: #555; } .note { border-left: 4px solid #E69F00;
       padding: .3rem .7rem; background: #fff8e8; }
figure.plot { display: inline-block; margin: .5rem 1rem .5rem 0; } figure.plot svg { max-width: 100%;
       height: auto; } nav a { margin-right: 1rem; }
@media print { nav { display: none; } h2 { break-before: auto; } figure.plot, table { break-inside: avoid; } }
figure.plot svg * { stroke-linejoin: round; stroke-linecap: butt; }
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# What the pages need: the one stylesheet above (by its hash) and the plots' SVG presentation
# attributes (`style="fill: ..."`, written by matplotlib). No script, no image, font, frame, form or
# fetch: everything else is 'none'. `frame-ancestors` is ignored in a <meta> policy, so the report
# file carries `CSP_META` and the service sends `CSP` (and X-Frame-Options for old browsers).
CSP_META = (
    f"default-src 'none'; style-src {_sha256(BASE_CSS)}; style-src-attr 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)
CSP = CSP_META + "; frame-ancestors 'none'"
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")


def dom_id(*parts: str) -> str:
    """An element id from parts that may be participant text: kept as it is when it is already a
    plain identifier of at most 64 characters (`candidates-latency_ms`); otherwise every other
    character becomes `_`, it is cut to 48, and a short hash of the original keeps names apart."""
    text = "-".join(parts)
    if SAFE_ID.fullmatch(text) and len(text) <= 64:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)[:48] + "-" + digest


REPORT = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}"><title>{{ title }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{{ css }}</style></head>
<body>
{% if links %}<nav id="nav">{% for label, href in links.items() %}<a href="{{ href }}">{{ label }}</a>{% endfor %}</nav>{% endif %}
<h1 id="report-title">{{ title }}</h1>
<p class="muted" id="report-meta">Experiment <b>{{ data.experiment }}</b>
{% if session %} · {{ "session" if data.session_id else "latest session" }} <b>{{ session.run_name }}</b>
(run <code>{{ session.run_id }}</code>, started {{ session.start_ms | when }}){% endif %}
· generated {{ generated }}</p>

<section id="summary"><h2>Summary</h2>
<ul>{% for line in summary %}<li>{{ line }}</li>{% endfor %}</ul></section>

<section id="candidates"><h2>Candidates: quality per target</h2>
<p class="muted">Every candidate run{{ " of this session" if data.session_id else " of the experiment, latest session first" }}.
MAE and RMSE in the target's unit (lower is better), R2 (higher is better, 1 is perfect). The best candidate per target (lowest validation RMSE, the one the trainer registers) is in bold.</p>
{% for target in targets %}
<h3>{{ target }}{% if target in registered %} <span class="muted">(registered as {{ registered[target] }})</span>{% endif %}</h3>
<table id="{{ dom_id('candidates', target) }}" class="candidates" data-target="{{ target }}">
<thead><tr><th>model</th><th>run</th><th>session</th>
<th>val MAE</th><th>val RMSE</th><th>val R2</th><th>test MAE</th><th>test RMSE</th><th>test R2</th></tr></thead>
<tbody>{% for c in rows[target] %}
<tr data-run-id="{{ c.run_id }}" data-model="{{ c.model }}" data-session="{{ c.session_id }}"{% if best[target] is sameas c %} class="best"{% endif %}>
<td>{{ c.model }}</td><td>{{ c.run_name }}</td><td><code>{{ c.session_id[:8] }}</code></td>
{% for split in names.SPLITS %}{% for metric in names.METRICS %}{{ c.metric(split ~ "_" ~ metric) | cell(split ~ "_" ~ metric) }}{% endfor %}{% endfor %}
</tr>{% endfor %}</tbody></table>
{% if "plot-quality-" ~ target in plots %}<figure class="plot" id="{{ dom_id('plot-quality', target) }}">{{ plots["plot-quality-" ~ target] }}
<figcaption>Validation and test RMSE per candidate{{ "" if data.session_id else " (latest session)" }}.</figcaption></figure>{% endif %}
{% endfor %}</section>

<section id="resources"><h2>Training cost against quality</h2>
<p class="muted">CPU seconds and peak memory of the training process while it fitted and scored the candidate,
the fit time and the run's duration (including logging the model), next to its test RMSE.</p>
{% for target in targets %}
<h3>{{ target }}</h3>
<table id="{{ dom_id('resources', target) }}" class="resources" data-target="{{ target }}">
<thead><tr><th>model</th><th>run</th><th>CPU seconds</th><th>peak memory (MB)</th><th>fit seconds</th><th>run duration (s)</th><th>test RMSE</th></tr></thead>
<tbody>{% for c in rows[target] %}
<tr data-run-id="{{ c.run_id }}" data-model="{{ c.model }}"><td>{{ c.model }}</td><td>{{ c.run_name }}</td>
{{ c.metric(names.CPU_SECONDS) | cell("cpu_seconds", 3) }}{{ c.metric(names.PEAK_RSS_MB) | cell("peak_rss_megabytes", 4) }}
{{ c.metric(names.FIT_SECONDS) | cell("fit_seconds", 3) }}{{ c.duration_s | cell("duration_seconds", 3) }}{{ c.metric("test_rmse") | cell("test_rmse") }}</tr>
{% endfor %}</tbody></table>
{% if "plot-cost-" ~ target in plots %}<figure class="plot" id="{{ dom_id('plot-cost', target) }}">{{ plots["plot-cost-" ~ target] }}
<figcaption>CPU seconds against test RMSE; marker size is peak memory.</figcaption></figure>{% endif %}
{% endfor %}</section>

<section id="registry"><h2>Model registry history</h2>
<p class="muted">Every version of both registered models, oldest first: which candidate it is, where it was trained,
the promotion gate's decision with its reason and trigger, and the aliases it holds now.</p>
{% for model, versions in data.versions.items() %}
<h3>{{ model }}</h3>
{% if not versions %}<p class="note" id="{{ dom_id('registry', model, 'empty') }}">No version registered yet.</p>{% else %}
<table id="{{ dom_id('registry', model) }}" class="registry" data-model="{{ model }}">
<thead><tr><th>version</th><th>registered</th><th>candidate</th><th>experiment</th><th>test RMSE</th><th>aliases now</th><th>decision</th><th>trigger</th><th>reason</th></tr></thead>
<tbody>{% for v in versions %}
<tr data-version="{{ v.version }}" data-decision="{{ v.decision }}" data-aliases="{{ v.aliases | join(',') }}">
<td>v{{ v.version }}</td><td>{{ v.created_ms | when }}</td><td>{{ v.candidate }}</td><td>{{ v.experiment }}</td>
{{ v.test_rmse | cell("test_rmse") }}<td>{{ v.aliases | join(", ") }}</td><td>{{ v.decision or "–" }}</td><td>{{ v.trigger or "–" }}</td>
<td>{{ v.reason }}{% if v.tags.get("rollback.reason") %}<br><b>Rolled back</b> to v{{ v.tags.get("rollback.to_version") }}: {{ v.tags.get("rollback.reason") }}{% endif %}</td></tr>
{% endfor %}</tbody></table>
<table id="{{ dom_id('aliases', model) }}" class="aliases"><thead><tr><th>when</th><th>alias move</th><th>why</th></tr></thead>
<tbody>{% for e in events[model] %}<tr data-version="{{ e.version }}"><td>{{ e.at }}</td><td>{{ e.event }}</td><td>{{ e.why }}</td></tr>{% endfor %}</tbody></table>
{% if "plot-registry-" ~ model in plots %}<figure class="plot" id="{{ dom_id('plot-registry', model) }}">{{ plots["plot-registry-" ~ model] }}
<figcaption>Test RMSE at training time per version.</figcaption></figure>{% endif %}
{% endif %}{% endfor %}

<h3>Retrainings</h3>
{% if not data.retrainings %}<p class="note" id="retrainings-empty">No retraining by the closed loop yet.</p>{% else %}
<table id="retrainings"><thead><tr><th>started</th><th>model</th><th>trigger</th><th>outcome</th><th>reason</th><th>run</th></tr></thead>
<tbody>{% for r in data.retrainings %}<tr data-run-id="{{ r.run_id }}" data-trigger="{{ r.trigger }}"><td>{{ r.start_ms | when }}</td><td>{{ r.model }}</td>
<td>{{ r.trigger }}{% if r.detail %}<br><span class="muted">{{ r.detail }}</span>{% endif %}</td><td>{{ r.outcome }}</td><td>{{ r.reason }}</td><td><code>{{ r.run_id[:8] }}</code></td></tr>{% endfor %}</tbody></table>
{% endif %}</section>

<section id="serving"><h2>Serving{% if serving %} over the last {{ serving.window }}{% endif %}</h2>
{% if serving is none %}<p class="note" id="serving-unavailable">Serving figures were not requested.</p>
{% elif not serving.available %}<p class="note" id="serving-unavailable">Prometheus at {{ serving.url }} could not be read: {{ serving.reason }}.
This section is empty; the rest of the report is complete.</p>
{% else %}
<p class="muted">From Prometheus ({{ serving.url }}): the gateway's requests (feedback excluded), latency and 5xx share,
live quality from feedback next to the served version's test RMSE at training time, drift against the training data,
and the containers' CPU (cores) and peak memory.</p>
{% if not serving.has_traffic %}<p class="note" id="serving-no-traffic">No requests in this window.</p>{% endif %}
<table id="serving-table"><thead><tr><th>model</th><th>versions that served (requests)</th><th>requests/s</th><th>p50 (ms)</th><th>p99 (ms)</th><th>error rate</th>
<th>live MAE</th><th>live RMSE</th><th>training RMSE</th><th>live R2</th></tr></thead>
<tbody>{% for name, m in serving.models.items() %}<tr data-model="{{ name }}">
<td>{{ name }}</td><td>{% for v, n in m.versions.items() %}v{{ v }} ({{ n | round | int }}) {% else %}–{% endfor %}</td>
{{ m.requests_per_s | cell("requests_per_s") }}{{ (m.p50_s * 1000 if m.p50_s is not none else none) | cell("p50_ms", 3) }}
{{ (m.p99_s * 1000 if m.p99_s is not none else none) | cell("p99_ms", 3) }}{{ m.error_rate | cell("error_rate") }}
{{ m.live.get("mae") | cell("live_mae") }}{{ m.live.get("rmse") | cell("live_rmse") }}{{ training_rmse(data, name, m.versions) | cell("training_rmse") }}{{ m.live.get("r2") | cell("live_r2", 3) }}</tr>{% endfor %}</tbody></table>
<h3>Drift</h3>
<table id="drift-table"><thead><tr><th>model</th><th>dataset drift in the window</th><th>drifted features (share, last)</th><th>prediction PSI (max)</th><th>most drifted features (PSI)</th></tr></thead>
<tbody>{% for name, m in serving.models.items() %}<tr data-model="{{ name }}"><td>{{ name }}</td>
<td>{{ "–" if m.dataset_drift is none else ("yes" if m.dataset_drift else "no") }}</td>{{ m.drifted_ratio | cell("drifted_ratio", 3) }}{{ m.prediction_psi | cell("prediction_psi", 3) }}
<td>{% for f, v in m.top_features %}{{ f }} {{ v | fmt(3) }}{{ ", " if not loop.last }}{% else %}–{% endfor %}</td></tr>{% endfor %}</tbody></table>
<h3>Containers</h3>
{% if not serving.containers %}<p class="note" id="containers-empty">No container metrics (cAdvisor runs only in the compose stack).</p>{% else %}
<table id="containers-table"><thead><tr><th>service</th><th>CPU (cores, mean)</th><th>peak memory (MB)</th></tr></thead>
<tbody>{% for service, (cpu, memory) in serving.containers.items() %}<tr data-service="{{ service }}"><td>{{ service }}</td>{{ cpu | cell("cpu_cores", 3) }}{{ (memory / 1e6 if memory is not none else none) | cell("memory_mb", 4) }}</tr>{% endfor %}</tbody></table>{% endif %}
{% for name in serving.models %}{% if "plot-serving-" ~ name in plots %}<figure class="plot" id="{{ dom_id('plot-serving', name) }}">{{ plots["plot-serving-" ~ name] }}
<figcaption>{{ name }}: requests per second and p99 latency.</figcaption></figure>{% endif %}{% endfor %}
{% endif %}</section>
<footer class="muted"><p>How to read this report: docs/reports.md in the platform's repository.</p></footer>
</body></html>
"""

INDEX = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}"><title>Reports</title><style>{{ css }}</style></head>
<body><nav id="nav"><a href="/">Reports</a><a href="/leaderboard">Leaderboard</a></nav>
<h1 id="index-title">Reports</h1>
<p class="muted">One report per participant's experiment (its latest session's candidates first), and one per training session.
Pages are built on request from MLflow and Prometheus (cached {{ cache_s | round | int }} s).</p>
{% if not experiments %}<p class="note" id="index-empty">No training session yet: run <code>make train</code>.</p>{% else %}
<table id="reports-index"><thead><tr><th>experiment</th><th>sessions</th><th>latest session</th><th>started</th></tr></thead>
<tbody>{% for e in experiments %}<tr data-experiment="{{ e.name }}"><td><a id="{{ dom_id('report-link', e.name) }}" href="{{ e.href }}">{{ e.name }}</a></td>
<td class="num">{{ e.sessions | length }}</td><td>{% if e.sessions %}<a href="{{ e.sessions[0].href }}">{{ e.sessions[0].name }}</a>{% endif %}</td>
<td>{% if e.sessions %}{{ e.sessions[0].start_ms | when }}{% endif %}</td></tr>{% endfor %}</tbody></table>{% endif %}
</body></html>
"""

LEADERBOARD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}"><title>Leaderboard</title><style>{{ css }}</style></head>
<body><nav id="nav"><a href="/">Reports</a><a href="/leaderboard">Leaderboard</a></nav>
<h1 id="leaderboard-title">Leaderboard</h1>
<p class="muted">The best candidate per target of each participant (lowest validation RMSE, as the trainer chooses), ranked by test RMSE. Cost is what
training that candidate took. Also as JSON at <a href="/api/leaderboard">/api/leaderboard</a> and in Grafana
("Platform overview", Leaderboard).</p>
{% if not targets %}<p class="note" id="leaderboard-empty">No candidate run yet: run <code>make train</code>.</p>{% endif %}
{% for target, entries in targets.items() %}
<h2>{{ target }}</h2>
<table id="{{ dom_id('leaderboard', target) }}" class="leaderboard" data-target="{{ target }}">
<thead><tr><th>rank</th><th>participant</th><th>model</th><th>version</th><th>test MAE</th><th>test RMSE</th><th>test R2</th>
<th>CPU seconds</th><th>peak memory (MB)</th><th>runs</th><th>last run</th></tr></thead>
<tbody>{% for e in entries %}<tr data-participant="{{ e.participant }}" data-run-id="{{ e.run_id }}" data-version="{{ e.version or '' }}">
<td class="num">{{ loop.index }}</td><td><a href="{{ e.report }}">{{ e.participant }}</a></td><td>{{ e.model }}</td><td>{{ "v" ~ e.version if e.version else "not registered" }}</td>
{{ e.test_mae | cell("test_mae") }}{{ e.test_rmse | cell("test_rmse") }}{{ e.test_r2 | cell("test_r2", 3) }}{{ e.cpu_seconds | cell("cpu_seconds", 3) }}
{{ e.peak_memory_mb | cell("peak_rss_megabytes", 4) }}<td class="num" data-value="{{ e.runs }}">{{ e.runs }}</td><td>{{ e.last_run_ms | when }}</td></tr>{% endfor %}</tbody></table>
{% endfor %}
</body></html>
"""

ERROR = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}"><title>Not available</title><style>{{ css }}</style></head>
<body><nav id="nav"><a href="/">Reports</a><a href="/leaderboard">Leaderboard</a></nav>
<h1 id="error-title">{{ status }}</h1><p id="error">{{ message }}</p></body></html>
"""
