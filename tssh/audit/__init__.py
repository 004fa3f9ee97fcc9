"""Audit log and transfer audit."""
