"""Operator tools that work on the lake directly (see docs/operations.md)."""
