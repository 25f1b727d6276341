"""Observability: metrics (and, with them, what ops see of a running ChatApp)."""
