"""ChatApp core library: plain Python, no Ray imports."""

__version__ = "0.1.0"
