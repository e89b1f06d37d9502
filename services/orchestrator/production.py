"""Production data for a retraining: the gateway's prediction log joined with feedback.

Each row of the prediction log (contracts/predlog.py: monitoring database, written by the gateway)
holds the features of one predicted row, the version that answered, and, once feedback arrived, the
observed `actual`.
A retraining learns from the labelled rows of a time window and the gate judges on the most recent
of them, held out from training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import psycopg2

from contracts import predlog
from contracts.models import RegisteredModel
from contracts.schema import FEATURE_NAMES
from contracts.settings import libpq_uri


@dataclass(frozen=True)
class Window:
    """Labelled production rows of one model in [start, end), oldest first: features, `target`, `ts`."""

    model: RegisteredModel
    start: datetime
    end: datetime
    rows: pd.DataFrame

    def split(self, holdout_share: float) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(train, holdout): the newest `holdout_share` of the rows are held out for the gate."""
        n_holdout = max(1, math.ceil(len(self.rows) * holdout_share)) if len(self.rows) else 0
        cut = len(self.rows) - n_holdout
        return self.rows.iloc[:cut], self.rows.iloc[cut:]


def labelled_window(db_uri: str, model: RegisteredModel, start: datetime, end: datetime) -> Window:
    """Read the labelled rows of `model` predicted in [start, end). Rows whose features do not hold
    every schema column (an older schema) are left out."""
    with psycopg2.connect(libpq_uri(db_uri)) as conn, conn.cursor() as cur:
        fetched = predlog.labelled_rows(cur, model.name, start, end)
    conn.close()
    records = [
        {**features, model.target: actual, "ts": ts.isoformat()}
        for ts, features, actual in fetched
        if isinstance(features, dict) and all(name in features for name in FEATURE_NAMES)
    ]
    columns = [*FEATURE_NAMES, model.target, "ts"]
    return Window(model, start, end, pd.DataFrame.from_records(records, columns=columns))


def version_rmse(
    db_uri: str, model: str, version: str, start: datetime, end: datetime
) -> tuple[int, float | None]:
    """(labelled rows, live RMSE) of one version's predictions made in [start, end)."""
    with psycopg2.connect(libpq_uri(db_uri)) as conn, conn.cursor() as cur:
        quality = predlog.version_quality(cur, model, version, start, end)
    conn.close()
    return quality
