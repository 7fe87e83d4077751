"""`glamhpc` commands of this area (registered on the shared app)."""

from glamhpc.cli import app  # noqa: F401
