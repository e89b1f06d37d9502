"""The prediction log's schema in the `monitoring` database: one place, applied by the
create-databases job (services/dbinit) as the database's owner. The gateway only writes rows and
the orchestrator only reads them; neither may run DDL (docs/operations.md, "Database roles")."""

from __future__ import annotations

import psycopg2

from contracts.settings import libpq_uri

# Every prediction the gateway answered; `actual` and `feedback_ts` are filled in by feedback.
SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id          bigserial PRIMARY KEY,
    ts          timestamptz NOT NULL,
    request_id  text NOT NULL UNIQUE,
    model       text NOT NULL,
    version     text NOT NULL,
    features    jsonb NOT NULL,
    prediction  double precision,
    latency_ms  double precision,
    actual      double precision,
    feedback_ts timestamptz
);
CREATE INDEX IF NOT EXISTS predictions_model_ts ON predictions (model, ts);
"""
# The tables and sequences above, for grants.
TABLES = ("predictions",)
SEQUENCES = ("predictions_id_seq",)
# The columns feedback updates (the gateway may update these and no others).
FEEDBACK_COLUMNS = ("actual", "feedback_ts")


def apply_schema(uri: str) -> None:
    """Create the prediction log's tables in the database at `uri` (idempotent, one transaction)."""
    conn = psycopg2.connect(libpq_uri(uri))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(SCHEMA)
    finally:
        conn.close()
