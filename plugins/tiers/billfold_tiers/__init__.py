"""Per-channel volume tiers for Billfold (entry point ``tiers`` in group ``billfold``)."""
