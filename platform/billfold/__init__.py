"""Billfold: a prepaid billing platform."""

from __future__ import annotations

from billfold.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]
