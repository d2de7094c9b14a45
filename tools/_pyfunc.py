"""MLflow pyfunc wrappers of DriftPilot's models (imported only when MLflow is in use).

``tools.registry`` loads every registered version back with ``unwrap_python_model().model``:
a ``TrainedModel`` (``DriftPilotModel``) or an ``AdoptedModel`` (``AdoptedPyfunc``), both of
which score Polars frames with ``predict_scores``.
"""

# No `from __future__ import annotations`: MLflow reads predict's type hints at class creation.
from pathlib import Path
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


class AdoptedPyfunc(PythonModel):
    """An adopted model (``tools.adopt``): the owner's MLflow model directory travels
    unchanged as the artifact ``source_model`` and is loaded with its own flavour when this
    pyfunc is loaded; only the spec found at adoption (JSON) is pickled.
    ``unwrap_python_model().model`` is then the ``AdoptedModel``."""

    def __init__(self, spec_json: str) -> None:
        self.spec_json = spec_json
        self.model: Any = None

    def load_context(self, context: Any) -> None:
        from tools.adopt import SOURCE_ARTIFACT, AdoptedSpec, open_model

        spec = AdoptedSpec.model_validate_json(self.spec_json)
        self.model = open_model(Path(context.artifacts[SOURCE_ARTIFACT]), spec)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        return self.model.predict_scores(pl.from_pandas(model_input))
