"""Where a batch comes from: the built-in datasets' batches by name (``resolver``: one cached
``NAME:BATCH`` resolver for the CLI, the API, the chat and the scheduler) and batch files
under allowed roots or uploaded, read with bounds (``files``).

A layer beside ``driftpilot.runs`` (it imports tools, store and core only). Its modules import
polars and numpy when called, so importing them costs nothing.
"""
