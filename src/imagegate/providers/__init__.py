"""Provider adapters, one module per upstream API."""
