"""Observability: metrics (`metrics`) and tracing (`tracing`) of a running ChatApp."""
