"""Alerts: webhooks told of run events."""
