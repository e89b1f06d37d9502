"""A deliberately broken candidate for the e2e rollback test (MLflow "models from code"): it loads and
serves, and every prediction fails."""

import mlflow
from mlflow.pyfunc import PythonModel


class BrokenModel(PythonModel):
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        raise RuntimeError("deliberately broken candidate (tests/stack/test_closed_loop.py)")


mlflow.models.set_model(BrokenModel())
