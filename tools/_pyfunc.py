"""MLflow pyfunc wrapper of a TrainedModel (imported only when MLflow is in use)."""

from __future__ import annotations

import mlflow.pyfunc
import polars as pl

from tools.train import TrainedModel


class DriftPilotModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """Serves P(label = 1) for a pandas/Polars frame of features; keeps the TrainedModel."""

    def __init__(self, model: TrainedModel) -> None:
        self.model = model

    # No annotations on purpose: MLflow derives a (wrong) signature from type hints.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        frame = model_input if isinstance(model_input, pl.DataFrame) else pl.from_pandas(model_input)
        return self.model.predict_proba(frame)
