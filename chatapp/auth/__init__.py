"""Accounts and authentication: passwords, JWT access tokens, rotating refresh tokens,
API keys, OIDC login and rate limits. Pure functions take secrets as arguments."""
