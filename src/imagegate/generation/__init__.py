"""The generation use case: admit, plan, hold, route, conform, host, price, settle."""
