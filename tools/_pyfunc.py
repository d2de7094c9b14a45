"""MLflow pyfunc wrapper of a TrainedModel (imported only when MLflow is in use)."""

# No `from __future__ import annotations`: MLflow reads predict's type hints at class creation.
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from mlflow.pyfunc.model import PythonModel

from tools.train import TrainedModel


class DriftPilotModel(PythonModel):
    """Serves P(label = 1) for a frame of features; ``unwrap_python_model().model`` gives
    back the TrainedModel (which scores Polars frames directly)."""

    def __init__(self, model: TrainedModel) -> None:
        self.model = model

    # pd.DataFrame is a hint MLflow accepts without inferring a schema from it.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        return self.model.predict_scores(pl.from_pandas(model_input))
