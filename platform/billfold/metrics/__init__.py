"""Prometheus metrics (``GET /metrics``): :mod:`billfold.metrics.service` counts requests, charges,
usage events, ledger entries and auto-reload outcomes as they happen, and reads holds, the outbox
and the month close from the database when scraped; :mod:`billfold.metrics.multiprocess` gives
``billfold serve --workers N`` the directory where the workers' counts are summed.

This package's ``__init__`` imports nothing: the command line pays for prometheus_client only when
it serves."""

USAGE_OUTCOMES = "billfold_usage_outcomes"
"""Scope key: the batch route's ``(status, code)`` for each event (accepted, replayed, or refused
with its code), which the metrics middleware counts."""
