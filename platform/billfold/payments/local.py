"""The built-in local payment provider (placeholder until the payments issue lands)."""

from __future__ import annotations
