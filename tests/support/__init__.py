"""Shared helpers for the test suite (no fixtures: those live in conftest files)."""
