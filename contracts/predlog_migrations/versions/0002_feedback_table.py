"""Feedback in a table of its own, joined with the predictions in the database.

Any gateway replica appends feedback rows (INSERT only, no UPDATE of predictions), in any order
with respect to their prediction (a replica's spool may replay a prediction later than its feedback
arrives); the view `labelled` joins the two for every reader. Existing feedback moves over, every
row kept.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE feedback (
            request_id text PRIMARY KEY,
            model      text NOT NULL,
            actual     double precision NOT NULL,
            ts         timestamptz NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX feedback_model_ts ON feedback (model, ts)")
    op.execute(
        "INSERT INTO feedback (request_id, model, actual, ts) "
        "SELECT request_id, model, actual, coalesce(feedback_ts, ts) FROM predictions "
        "WHERE actual IS NOT NULL"
    )
    op.execute("ALTER TABLE predictions DROP COLUMN actual, DROP COLUMN feedback_ts")
    # The drift window reads the newest rows of one served version.
    op.execute("CREATE INDEX predictions_model_version_ts ON predictions (model, version, ts)")
    op.execute(
        """
        CREATE VIEW labelled AS
        SELECT p.id, p.ts, p.request_id, p.model, p.version, p.features, p.prediction, p.latency_ms,
               f.actual, f.ts AS feedback_ts
        FROM predictions AS p JOIN feedback AS f ON f.request_id = p.request_id AND f.model = p.model
        """
    )


def downgrade() -> None:
    # Feedback whose prediction never arrived has no column to go back to: it is not kept.
    op.execute("DROP VIEW labelled")
    op.execute("DROP INDEX predictions_model_version_ts")
    op.execute(
        "ALTER TABLE predictions ADD COLUMN actual double precision, ADD COLUMN feedback_ts timestamptz"
    )
    op.execute(
        "UPDATE predictions AS p SET actual = f.actual, feedback_ts = f.ts FROM feedback AS f "
        "WHERE f.request_id = p.request_id AND f.model = p.model"
    )
    op.execute("DROP TABLE feedback")
