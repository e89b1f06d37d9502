"""Preprocessing: scaling for numeric features, one-hot for categorical ones."""

from __future__ import annotations

from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from contracts.schema import CATEGORICAL_FEATURES, FEATURES, NUMERIC_FEATURES


def build_preprocessor() -> ColumnTransformer:
    """The preprocessing every candidate shares; categories are fixed by the schema."""
    categories = [f.categories for f in FEATURES if not f.is_numeric]
    return ColumnTransformer(
        [
            ("numeric", StandardScaler(), list(NUMERIC_FEATURES)),
            (
                "categorical",
                OneHotEncoder(
                    categories=[list(c) for c in categories], handle_unknown="ignore", sparse_output=False
                ),
                list(CATEGORICAL_FEATURES),
            ),
        ],
        verbose_feature_names_out=False,
    )


def preprocessor_params() -> dict[str, str]:
    """The preprocessing configuration, as run params."""
    return {
        "preprocessing.numeric": "StandardScaler",
        "preprocessing.numeric_features": ",".join(NUMERIC_FEATURES),
        "preprocessing.categorical": "OneHotEncoder(handle_unknown=ignore)",
        "preprocessing.categorical_features": ",".join(CATEGORICAL_FEATURES),
    }
