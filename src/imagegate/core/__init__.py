"""Canonical request/result types and the error hierarchy shared by every layer."""
