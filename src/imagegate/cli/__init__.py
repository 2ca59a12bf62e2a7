"""The ``imagegate`` command: server, keys and credits, operations, and a client."""

from imagegate.cli.main import main

__all__ = ["main"]
