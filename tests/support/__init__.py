"""Shared test support: harnesses, fixtures and helpers imported by test modules (no tests)."""
