"""imagegate: an OpenAI-compatible Images API gateway."""

__version__ = "0.1.0"
