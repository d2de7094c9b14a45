"""DriftPilot's REST agent-task API (FastAPI): routes/, deps and schemas over the service façade.

``create_app()`` builds the app; ``driftpilot serve`` runs it with uvicorn.
"""
