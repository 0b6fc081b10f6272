"""The operator dashboard at /dashboard: server-rendered pages over the core services."""
