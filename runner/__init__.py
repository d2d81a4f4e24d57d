"""lading: ship Kubernetes configuration as OCI artifacts."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lading")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
