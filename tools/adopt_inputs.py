"""What an adopted model takes: the input signature's columns, each checked against the
labelled reference (missing, extra or retyped columns are named together in one
``SchemaError``); without a signature the caller names them (numeric and categorical).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from driftpilot.core.errors import SchemaError

_NUMERIC_TYPES = {"integer", "long", "float", "double"}
_WHOLE_TYPES = {"integer", "long"}
_POLARS_OF = {
    "integer": pl.Int32,
    "long": pl.Int64,
    "float": pl.Float32,
    "double": pl.Float64,
    "string": pl.String,
    "boolean": pl.Boolean,
}


def model_input(frame: pl.DataFrame, inputs: dict[str, str]) -> Any:
    """The pandas frame the model is given: its inputs, in its order, as its types."""
    missing = [c for c in inputs if c not in frame.columns]
    if missing:
        raise SchemaError(f"cannot score: columns {missing} are missing")
    return frame.select(
        [pl.col(c).cast(_POLARS_OF[t]) if t in _POLARS_OF else pl.col(c) for c, t in inputs.items()]
    ).to_pandas()


def flavour_of(pyfunc: Any) -> str:
    """The MLflow flavour the model was saved with (python_function for a custom model)."""
    flavours = pyfunc.metadata.flavors
    own = [f for f in flavours if f != "python_function"]
    return own[0] if own else "python_function"


def signature_inputs(pyfunc: Any) -> dict[str, str] | None:
    """The columns the signature names, with their MLflow types; None without a column
    signature. A column the signature marks optional (MLflow does when the logged example
    had missing values) is still an input: the reference must hold it.

    Raises:
        SchemaError: a tensor signature (the model takes arrays, not named columns).
    """
    schema = pyfunc.metadata.get_input_schema()
    if schema is None:
        return None
    if schema.is_tensor_spec():
        raise SchemaError(
            "the model's signature takes tensors, not named columns; DriftPilot adopts models "
            "that take a table"
        )
    if not schema.has_input_names():
        return None
    return {str(c.name): _type_name(c.type) for c in schema.inputs}


def _type_name(kind: Any) -> str:
    return str(getattr(kind, "name", kind))


def _compatible(mlflow_type: str, dtype: pl.DataType) -> bool:
    if mlflow_type in _WHOLE_TYPES:
        return dtype.is_integer()
    if mlflow_type in _NUMERIC_TYPES:
        return dtype.is_numeric()
    if mlflow_type == "string":
        return dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)
    if mlflow_type == "boolean":
        return dtype == pl.Boolean
    if mlflow_type == "datetime":
        return dtype.is_temporal()
    return False


def check_inputs(
    reference: pl.DataFrame,
    target: str,
    signature: dict[str, str] | None,
    numeric: list[str],
    categorical: list[str],
) -> tuple[dict[str, str], list[str], list[str]]:
    """The model's inputs (column -> MLflow type), numeric and categorical ones.

    With a signature, its columns are the inputs (``numeric``/``categorical``, if given, must
    name the same set and say which are categorical); without one, ``numeric`` and
    ``categorical`` name them.

    Raises:
        SchemaError: columns the model takes and the reference lacks, columns named that the
            model does not take, columns of another type, the target among the inputs, or no
            signature and no columns named: all named in one message.
    """
    named = [*numeric, *categorical]
    if signature is None:
        if not named:
            raise SchemaError(
                "the model has no input signature: name its input columns with --numeric "
                "and --categorical"
            )
        inputs = {c: "double" for c in numeric} | {c: "string" for c in categorical}
    else:
        inputs = signature
    problems = _mismatches(reference, target, inputs, named, signature is not None)
    if problems:
        raise SchemaError(
            "the model's inputs do not match the reference: " + "; ".join(problems) + ". "
            "Nothing was registered."
        )
    if named:
        return (
            inputs,
            [c for c in numeric if c in inputs],
            [c for c in categorical if c in inputs],
        )
    cats = [c for c, t in inputs.items() if t in ("string", "boolean")]
    return inputs, [c for c in inputs if c not in cats], cats


def _mismatches(
    reference: pl.DataFrame,
    target: str,
    inputs: dict[str, str],
    named: list[str],
    signed: bool,
) -> list[str]:
    schema = reference.schema
    missing = [c for c in inputs if c not in schema]
    extra = [c for c in named if c not in inputs] if signed else []
    unnamed = [c for c in inputs if c not in named and c in schema] if signed and named else []
    retyped = [
        f"{c} (model: {t}, reference: {schema[c]})"
        for c, t in inputs.items()
        if c in schema and not _compatible(t, schema[c])
    ]
    problems = []
    if missing:
        problems.append(
            f"missing columns {missing} (the model takes them, the reference lacks them)"
        )
    if extra:
        problems.append(f"extra columns {extra} (named as features, the model does not take them)")
    if unnamed:
        problems.append(f"columns {unnamed} are inputs of the model but named in neither list")
    if retyped:
        problems.append(f"retyped columns {retyped}")
    if target in inputs:
        problems.append(f"the target {target!r} is one of the model's inputs")
    return problems
