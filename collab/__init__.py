"""collab: a collaborative document editing server."""

__version__ = "0.1.0"
