"""lading: ship Kubernetes configuration as OCI artifacts."""

# Kept here rather than read through importlib.metadata at start-up, which costs more than the
# rest of `lading --version`; a test checks it against pyproject.toml.
__version__ = "0.1.0"
