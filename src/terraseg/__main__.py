"""``python -m terraseg``."""

from terraseg.cli.main import app

app()
