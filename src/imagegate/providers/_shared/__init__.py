"""Mechanics shared by the adapters (errors, image decoding, masks, polling)."""
