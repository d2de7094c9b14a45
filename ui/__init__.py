"""The Chainlit chat of DriftPilot (``driftpilot ui``): it calls the service façade only."""
