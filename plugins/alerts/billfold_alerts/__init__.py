"""Webhook endpoints and balance alerts for Billfold (entry point ``alerts`` in group ``billfold``)."""
