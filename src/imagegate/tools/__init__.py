"""Generators run by hand or by tests (docs tables); not imported by the server."""
