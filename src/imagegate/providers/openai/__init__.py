"""The OpenAI family: OpenAI itself, Azure OpenAI, and any OpenAI-compatible server."""
