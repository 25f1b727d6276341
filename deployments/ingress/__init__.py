"""The HTTP ingress: FastAPI inside Ray Serve."""
