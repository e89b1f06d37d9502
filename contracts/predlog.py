"""The prediction log's contract: its tables in the `monitoring` database, who may do what on them,
and the queries every service runs (docs/architecture.md, "The prediction log").

- `predictions`: every prediction a gateway replica answered (INSERT only).
- `feedback`: the actual value for an earlier prediction, appended by whichever replica took it.
- `labelled`: the view joining the two, which the monitor (live quality) and the orchestrator
  (training windows, rollout watch) read.

No service may run DDL: the schema is versioned by migrations (contracts/predlog_migrations), which
only the create-databases job and `make upgrade` run, as the database's owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from contracts.database import GATEWAY_ROLE, MONITOR_ROLE, ORCHESTRATOR_ROLE

PREDICTIONS, FEEDBACK, LABELLED = "predictions", "feedback", "labelled"
# What each service's role may do on the log, and nothing more (services/dbinit applies it; the
# migrations' version table is in no role's hands).
GRANTS: dict[str, dict[str, str]] = {
    GATEWAY_ROLE: {PREDICTIONS: "SELECT, INSERT", FEEDBACK: "SELECT, INSERT"},
    MONITOR_ROLE: {PREDICTIONS: "SELECT", LABELLED: "SELECT"},  # feedback only through the view
    ORCHESTRATOR_ROLE: {LABELLED: "SELECT"},
}
RELATIONS = (PREDICTIONS, FEEDBACK, LABELLED)
# Sequences and the roles that take values from them.
SEQUENCES = {"predictions_id_seq": (GATEWAY_ROLE,)}

# -- the gateway's writes (psycopg2 execute_values) ---------------------------------------------------
# A prediction once per request id.
INSERT = (
    "INSERT INTO predictions (ts, request_id, model, version, features, prediction, latency_ms) "
    "VALUES %s ON CONFLICT (request_id) DO NOTHING"
)
INSERT_TEMPLATE = "(to_timestamp(%s), %s, %s, %s, %s::jsonb, %s, %s)"
# Feedback for a matched prediction (its model taken from the prediction); the first value wins.
FEEDBACK_INSERT = (
    "INSERT INTO feedback (request_id, model, actual, ts) "
    "SELECT p.request_id, p.model, v.actual, to_timestamp(v.ts) "
    "FROM (VALUES %s) AS v (request_id, actual, ts) JOIN predictions AS p ON p.request_id = v.request_id "
    "ON CONFLICT (request_id) DO NOTHING"
)
FEEDBACK_TEMPLATE = "(%s, %s::double precision, %s::double precision)"

# -- the gateway's feedback match ---------------------------------------------------------------------
MATCH = """
SELECT p.request_id, f.request_id IS NOT NULL FROM predictions AS p
LEFT JOIN feedback AS f ON f.request_id = p.request_id
WHERE p.model = %s AND p.request_id = ANY(%s)
"""


@dataclass(frozen=True)
class Match:
    """Which of the request ids of one feedback post the log holds a prediction of that model for."""

    open: set[str]  # logged, without feedback yet
    answered: set[str]  # logged, with feedback already


def match(cur: Any, model: str, request_ids: list[str]) -> Match:
    cur.execute(MATCH, (model, request_ids))
    found = cur.fetchall()
    return Match({rid for rid, has in found if not has}, {rid for rid, has in found if has})


# -- the monitor's windows ----------------------------------------------------------------------------
# The version of a model's newest logged prediction: what its gateways serve now, mid-rollout too.
SERVED_VERSION = "SELECT version FROM predictions WHERE model = %s ORDER BY ts DESC LIMIT 1"


def served_version(cur: Any, model: str) -> str | None:
    """The version that answered `model`'s newest logged prediction; None before the first one."""
    cur.execute(SERVED_VERSION, (model,))
    row = cur.fetchone()
    return None if row is None else str(row[0])


# The newest rows of one served version, at most `per_request` of each request (the rows of one
# request share its ts; a pseudo-random but stable pick by request id), so that one caller's big
# batch cannot fill the window. Only the newest `scan` rows are looked at.
DRIFT_WINDOW = """
SELECT features, prediction FROM (
    SELECT ts, features, prediction,
           row_number() OVER (PARTITION BY ts ORDER BY md5(request_id)) AS nth
    FROM (SELECT ts, request_id, features, prediction FROM predictions
          WHERE model = %(model)s AND version = %(version)s AND ts >= %(since)s
          ORDER BY ts DESC LIMIT %(scan)s) AS newest
) AS capped
WHERE nth <= %(per_request)s
ORDER BY ts DESC LIMIT %(rows)s
"""
# MAE, RMSE and R2 of one version over its `rows` most recent feedback values. R2 is NULL while the
# actual values have no variance.
LIVE_QUALITY = """
SELECT count(*), avg(abs(actual - prediction)), sqrt(avg((actual - prediction) ^ 2)),
       1 - sum((actual - prediction) ^ 2) / nullif(var_pop(actual) * count(*), 0)
FROM (SELECT actual, prediction FROM labelled
      WHERE model = %(model)s AND version = %(version)s AND prediction IS NOT NULL
        AND feedback_ts >= %(since)s
      ORDER BY feedback_ts DESC LIMIT %(rows)s) AS recent
"""


def drift_window(
    cur: Any, model: str, version: str, rows: int, per_request: int, since: datetime, scan_factor: int = 20
) -> list[tuple[Any, float | None]]:
    """(features, prediction) of the newest rows of `model` `version` since `since`, newest first."""
    params = {"model": model, "version": version, "since": since, "rows": rows,
              "per_request": per_request, "scan": rows * scan_factor}  # fmt: skip
    cur.execute(DRIFT_WINDOW, params)
    return list(cur.fetchall())


@dataclass(frozen=True)
class Quality:
    pairs: int
    mae: float | None
    rmse: float | None
    r2: float | None


def live_quality(cur: Any, model: str, version: str, rows: int, since: datetime) -> Quality:
    """Live quality of `model` `version` from its newest `rows` feedback values since `since`."""
    cur.execute(LIVE_QUALITY, {"model": model, "version": version, "rows": rows, "since": since})
    count, mae, rmse, r2 = cur.fetchone()
    return Quality(int(count), *(None if v is None else float(v) for v in (mae, rmse, r2)))


# -- the orchestrator's reads -------------------------------------------------------------------------
LABELLED_WINDOW = """
SELECT ts, features, actual FROM labelled
WHERE model = %s AND ts >= %s AND ts < %s
ORDER BY ts
"""
VERSION_QUALITY = """
SELECT count(*), sqrt(avg((prediction - actual) ^ 2)) FROM labelled
WHERE model = %s AND version = %s AND prediction IS NOT NULL AND ts >= %s AND ts < %s
"""


def labelled_rows(cur: Any, model: str, start: datetime, end: datetime) -> list[tuple[datetime, Any, float]]:
    """(ts, features, actual) of `model`'s predictions made in [start, end) that have feedback,
    oldest first: a retraining's window."""
    cur.execute(LABELLED_WINDOW, (model, start, end))
    return list(cur.fetchall())


def version_quality(
    cur: Any, model: str, version: str, start: datetime, end: datetime
) -> tuple[int, float | None]:
    """(labelled rows, RMSE) of one version's predictions made in [start, end)."""
    cur.execute(VERSION_QUALITY, (model, version, start, end))
    count, rmse = cur.fetchone()
    return int(count), None if rmse is None else float(rmse)
