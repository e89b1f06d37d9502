"""A user CSV is accepted when it matches the schema; otherwise one error names every problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts import synthetic
from trainer import data


def write(tmp_path: Path, frame) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path / "measurements.csv"
    frame.to_csv(path, index=False)
    return path


def test_a_valid_csv_round_trips(tmp_path: Path) -> None:
    original = synthetic.generate(50, seed=2)
    loaded = data.load_csv(write(tmp_path, original))
    assert list(loaded.columns) == list(original.columns)
    assert loaded["latency_ms"].tolist() == pytest.approx(original["latency_ms"].tolist())


def test_missing_columns_are_named(tmp_path: Path) -> None:
    frame = synthetic.generate(20).drop(columns=["hop_count", "latency_ms"])
    with pytest.raises(data.SchemaError, match=r"missing columns: hop_count, latency_ms"):
        data.load_csv(write(tmp_path, frame))


def test_mistyped_column_is_named_with_an_example(tmp_path: Path) -> None:
    frame = synthetic.generate(20)
    frame["jitter_ms"] = frame["jitter_ms"].astype(object)
    frame.loc[3, "jitter_ms"] = "fast"
    with pytest.raises(
        data.SchemaError, match=r"mistyped columns: jitter_ms \(expected a number, got 'fast'\)"
    ):
        data.load_csv(write(tmp_path, frame))


def test_unknown_category_and_empty_cells_are_named(tmp_path: Path) -> None:
    frame = synthetic.generate(20)
    frame.loc[0, "protocol"] = "carrier-pigeon"
    frame.loc[1, "distance_km"] = None
    with pytest.raises(data.SchemaError) as err:
        data.load_csv(write(tmp_path, frame))
    assert "protocol ['carrier-pigeon']" in str(err.value)
    assert "distance_km (1 rows)" in str(err.value)


def test_not_a_csv_and_no_file(tmp_path: Path) -> None:
    with pytest.raises(data.SchemaError, match="no such file"):
        data.load_csv(tmp_path / "absent.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(data.SchemaError, match="not a readable CSV"):
        data.load_csv(empty)
