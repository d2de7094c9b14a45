"""Runs: the ControlPlane façade and what it is made of."""
