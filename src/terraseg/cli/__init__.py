"""The ``terraseg`` command line (Typer)."""
