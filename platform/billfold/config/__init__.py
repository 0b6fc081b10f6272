"""Operator configuration: config/billing.yaml → typed, validated, immutable structs."""

from __future__ import annotations

from billfold.config.loader import ConfigError, load_config, load_config_text
from billfold.config.schema import (
    AuthConfig,
    AutoReloadDefaults,
    BillfoldConfig,
    ChannelConfig,
    CurrencyConfig,
    DatabaseConfig,
    HoldsConfig,
    InvoicesConfig,
    MessageTypeConfig,
    PlansConfig,
    PlanStep,
    PortalConfig,
    RateLimitsConfig,
    ServerConfig,
    UsageConfig,
    WorkerConfig,
)

__all__ = [
    "AuthConfig",
    "AutoReloadDefaults",
    "BillfoldConfig",
    "ChannelConfig",
    "ConfigError",
    "CurrencyConfig",
    "DatabaseConfig",
    "HoldsConfig",
    "InvoicesConfig",
    "MessageTypeConfig",
    "PlanStep",
    "PlansConfig",
    "PortalConfig",
    "RateLimitsConfig",
    "ServerConfig",
    "UsageConfig",
    "WorkerConfig",
    "load_config",
    "load_config_text",
]
