"""The HTTP routes, one module per resource; the machinery they share stays in ``api``."""
