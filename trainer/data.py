"""Training data: the synthetic generator (`contracts.synthetic`) or a user CSV of the same schema,
checked against the feature schema and split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from contracts.schema import CATEGORICAL_FEATURES, FEATURES, TARGETS


class SchemaError(ValueError):
    """A dataset does not match the feature schema; the message names every offending column."""


def validate(df: pd.DataFrame, source: str, require_targets: bool = True) -> pd.DataFrame:
    """Check `df` against the schema and return it with canonical dtypes.

    Raises SchemaError naming every missing column, mistyped column, empty cell and unknown category.
    """
    required = [f.name for f in FEATURES] + (list(TARGETS) if require_targets else [])
    problems: list[str] = []
    missing = [c for c in required if c not in df.columns]
    if missing:
        problems.append("missing columns: " + ", ".join(missing))
    out = df.copy()
    mistyped, empty, unknown = [], [], []
    for column in [c for c in required if c in df.columns]:
        values = df[column]
        if values.isna().any():
            empty.append(f"{column} ({int(values.isna().sum())} rows)")
            continue
        if column in CATEGORICAL_FEATURES:
            allowed = next(f.categories for f in FEATURES if f.name == column)
            bad = sorted(set(values.astype(str)) - set(allowed))
            if bad:
                unknown.append(f"{column} {bad[:5]} (allowed: {', '.join(allowed)})")
            out[column] = values.astype(str)
        else:
            numeric = pd.to_numeric(values, errors="coerce")
            if numeric.isna().any():
                example = values[numeric.isna()].iloc[0]
                mistyped.append(f"{column} (expected a number, got {example!r})")
            out[column] = numeric.astype(float)
    if mistyped:
        problems.append("mistyped columns: " + "; ".join(mistyped))
    if empty:
        problems.append("empty values in: " + ", ".join(empty))
    if unknown:
        problems.append("unknown categories: " + "; ".join(unknown))
    if not problems and len(df) == 0:
        problems.append("no rows")
    if problems:
        raise SchemaError(f"{source} does not match the feature schema: " + " | ".join(problems))
    return out[required]


def load_csv(path: Path) -> pd.DataFrame:
    """Read and validate a user CSV with the generator's columns (features and both targets)."""
    if not path.is_file():
        raise SchemaError(f"{path}: no such file")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{path}: not a readable CSV ({exc})") from exc
    return validate(df, str(path))


def split(
    df: pd.DataFrame, seed: int, val_share: float = 0.15, test_share: float = 0.15
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Shuffle and split into train / validation / test frames."""
    order = np.random.default_rng(seed).permutation(len(df))
    n_test = max(1, int(len(df) * test_share))
    n_val = max(1, int(len(df) * val_share))
    test, val, train = np.split(order, [n_test, n_test + n_val])
    return df.iloc[train], df.iloc[val], df.iloc[test]
