"""Execution: who runs a control run, and where (in process, procrastinate)."""
