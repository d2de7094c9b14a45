"""The inference log: predictions a model's service logs row by row (``log``), cut into
windows that become batches and control runs (``windows``), and labels that come later
(``labels``). A layer beside scheduling: it submits runs through ``driftpilot.runs``.
"""
