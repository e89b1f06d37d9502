"""The prediction log as every platform had it before migrations: one row per answered prediction,
feedback in `actual` and `feedback_ts`.

Revision ID: 0001
Revises: none
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE predictions (
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
        )
        """
    )
    op.execute("CREATE INDEX predictions_model_ts ON predictions (model, ts)")
