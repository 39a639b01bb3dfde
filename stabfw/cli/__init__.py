"""The ``stabfw`` command: :func:`main` and one module per subcommand."""

from stabfw.cli.main import main

__all__ = ["main"]
