"""A model whose predict raises for one row value, for the gateway's batching tests (MLflow "models
from code", served by `mlflow models serve`): rows with distance_km == POISON make it fail, every
other row gets a fixed formula of its features. Each call takes at least DELAY_S, so concurrent
requests queue in the gateway."""

import time

import mlflow
from mlflow.pyfunc import PythonModel

POISON = 1234.5
DELAY_S = 0.1


class RaisingModel(PythonModel):
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        time.sleep(DELAY_S)
        if (model_input["distance_km"] == POISON).any():
            raise ValueError(f"deliberately fails on distance_km={POISON} (tests/raising_model.py)")
        return (model_input["distance_km"] * 0.01 + model_input["hop_count"] * 0.5).tolist()


mlflow.models.set_model(RaisingModel())
