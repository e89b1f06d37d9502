"""Request validation against a model version's MLflow signature, in plain Python.

The per-column spec is computed once per version (when the registry poller loads it), so checking a
record is a handful of type tests: no pandas, no MLflow schema enforcement on the request path.
Unknown categories are accepted on purpose (the model's one-hot encoder ignores them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from math import isfinite
from typing import Any

# JSON type names for the messages.
_JSON_TYPE = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}
_NUMBER_TYPES = ("double", "float")
_INTEGER_TYPES = ("long", "integer")


@dataclass(frozen=True)
class Column:
    """One input column: its name, the kind of JSON value it takes and whether it is required."""

    name: str
    kind: str  # "number", "integer", "string", "boolean" or "any"
    required: bool = True


def columns_from_signature(signature: Any) -> tuple[Column, ...] | None:
    """The column spec of an MLflow ModelSignature, or None when there is no column-based input."""
    inputs = getattr(signature, "inputs", None)
    if inputs is None or not getattr(inputs, "has_input_names", lambda: False)():
        return None
    columns = []
    for spec in inputs.inputs:
        type_name = getattr(getattr(spec, "type", None), "name", "")
        if type_name in _NUMBER_TYPES:
            kind = "number"
        elif type_name in _INTEGER_TYPES:
            kind = "integer"
        elif type_name in ("string", "boolean"):
            kind = type_name
        else:
            kind = "any"  # binary, datetime, arrays, objects: left to the model server
        columns.append(Column(spec.name, kind, bool(getattr(spec, "required", True))))
    return tuple(columns)


def _type_name(value: object) -> str:
    return _JSON_TYPE.get(type(value), type(value).__name__)


def _problem(kind: str, value: object) -> str | None:
    """Why `value` does not fit a column of `kind`, or None when it does."""
    value_type = type(value)
    if kind == "number":
        if value_type is int or (value_type is float and isfinite(value)):  # type: ignore[arg-type]
            return None
        if value_type is float:
            return f"expected a finite number, got {value}"
        return f"expected a number, got {_type_name(value)}"
    if kind == "string":
        return None if value_type is str else f"expected a string, got {_type_name(value)}"
    if kind == "integer":
        if value_type is int or (value_type is float and isfinite(value) and value.is_integer()):  # type: ignore[attr-defined,arg-type]
            return None
        return f"expected an integer, got {_type_name(value)}"
    if kind == "boolean":
        return None if value_type is bool else f"expected a boolean, got {_type_name(value)}"
    return None


def validate_records(records: list[Any], columns: tuple[Column, ...] | None) -> list[dict[str, Any]]:
    """Every problem of every record as {"record": i, "field": name, "problem": text}; [] if valid."""
    problems: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            problems.append(
                {"record": index, "field": None, "problem": f"expected an object, got {_type_name(record)}"}
            )
            continue
        if columns is None:
            continue
        for column in columns:
            value = record.get(column.name)
            if value is None:
                if column.required:
                    what = "null value" if column.name in record else "missing field"
                    problems.append({"record": index, "field": column.name, "problem": what})
                continue
            problem = _problem(column.kind, value)
            if problem is not None:
                problems.append({"record": index, "field": column.name, "problem": problem})
    return problems


def records_from_payload(payload: Any) -> list[Any] | None:
    """Rows of an MLflow scoring payload in `dataframe_records` or `dataframe_split` form, else None."""
    if not isinstance(payload, dict):
        return None
    records = payload.get("dataframe_records")
    if isinstance(records, list):
        return records
    split = payload.get("dataframe_split")
    if isinstance(split, dict):
        columns, data = split.get("columns"), split.get("data")
        if isinstance(columns, list) and isinstance(data, list):
            return [dict(zip(columns, row, strict=False)) for row in data if isinstance(row, list)]
    return None
