"""The prediction log's contract: the `predictions` table in the `monitoring` database, its names and
the queries every service runs on it. The gateway writes rows and feedback, the orchestrator reads
training windows; neither may run DDL (docs/operations.md, "Database roles"). The schema itself is
versioned by migrations (contracts/predlog_migrations), which only the create-databases job and
`make upgrade` run, as the database's owner.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

# Every prediction the gateway answered; `actual` and `feedback_ts` are filled in by feedback.
TABLE = "predictions"
COLUMNS = ("id", "ts", "request_id", "model", "version", "features", "prediction", "latency_ms",
           "actual", "feedback_ts")  # fmt: skip
# The tables and sequences of the log, for grants (the migrations' version table is not among them:
# no service role may write it).
TABLES = (TABLE,)
SEQUENCES = ("predictions_id_seq",)
# The columns feedback updates (the gateway may update these and no others).
FEEDBACK_COLUMNS = ("actual", "feedback_ts")

# The statements on TABLE (spelled out: SQL that reads as it runs). The gateway's writes (psycopg2
# execute_values): a prediction once per request id, feedback by request id.
INSERT = (
    "INSERT INTO predictions (ts, request_id, model, version, features, prediction, latency_ms) "
    "VALUES %s ON CONFLICT (request_id) DO NOTHING"
)
INSERT_TEMPLATE = "(to_timestamp(%s), %s, %s, %s, %s::jsonb, %s, %s)"
FEEDBACK_UPDATE = (
    "UPDATE predictions AS p SET actual = v.actual, feedback_ts = to_timestamp(v.ts) "
    "FROM (VALUES %s) AS v (request_id, actual, ts) WHERE p.request_id = v.request_id"
)
FEEDBACK_TEMPLATE = "(%s, %s::double precision, %s::double precision)"

LABELLED_WINDOW = """
SELECT ts, features, actual FROM predictions
WHERE model = %s AND actual IS NOT NULL AND ts >= %s AND ts < %s
ORDER BY ts
"""
VERSION_QUALITY = """
SELECT count(*), sqrt(avg((prediction - actual) ^ 2)) FROM predictions
WHERE model = %s AND version = %s AND actual IS NOT NULL AND prediction IS NOT NULL
  AND ts >= %s AND ts < %s
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
