"""The audit trail of operator actions, and the named operator keys."""
