"""The prediction log as platforms created it before its migrations existed: the DDL the
create-databases job ran (CREATE ... IF NOT EXISTS) up to revision 0001, kept to build such
databases in tests."""

LEGACY_SCHEMA = """
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
