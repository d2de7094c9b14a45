"""Core: settings, errors, identity, policy, LLM, logs, faults, vocabulary (the floor)."""
