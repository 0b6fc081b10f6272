"""billing.yaml → typed, validated, immutable config: errors name the file, the key path and the
line; ${VAR} / ${VAR:-default} interpolation is typed like YAML; BILLFOLD_DATABASE_URL wins;
plugin sections are validated (an unknown one is refused)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from billfold.config import BillfoldConfig, ConfigError, load_config, load_config_text
from conftest import BASE_CONFIG, run_cli


def line_of(text: str, fragment: str) -> int:
    """1-based line of the first line containing ``fragment``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if fragment in line:
            return number
    raise AssertionError(f"{fragment!r} not in the text")


def refused(text: str, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, source="billing.yaml", environ=kwargs.pop("environ", {}), **kwargs)
    return caught.value


def test_the_shipped_config_loads():
    config, _ = load_config_text(BASE_CONFIG, environ={})
    assert isinstance(config, BillfoldConfig)
    assert config.environment == "development"
    assert config.default_currency == "usd"
    assert config.currencies["usd"].minimum_top_up == 500
    assert config.currencies["eur"].symbol == "€"
    assert str(config.channels["sms"].price) == "0.79"
    assert not hasattr(config, "alerts")  # balance alerts are the alerts plugin's section
    assert config.auto_reload.monthly_limit_cents is None
    assert config.server.port == 8000
    assert config.worker.in_process is True
    assert config.database.url == "sqlite+aiosqlite:///billfold.db"
    assert sorted(config.plugins) == ["alerts", "tiers"]  # raw here: each plugin validates its own section
    with pytest.raises(AttributeError):
        config.default_currency = "eur"  # type: ignore[misc]


# -- errors point at the key -----------------------------------------------------------------------


def test_typo_in_a_key_names_the_path_and_line():
    text = BASE_CONFIG.replace("    minimum_top_up: 1000       # €10.00", "    minimun_top_up: 1000")
    error = refused(text)
    assert error.key_path == "currencies.eur.minimun_top_up"
    assert error.line == line_of(text, "minimun_top_up")
    assert error.source == "billing.yaml"
    assert f"billing.yaml:{error.line}" in str(error)
    assert "currencies.eur.minimun_top_up" in str(error)
    assert "unknown field" in str(error)


def test_typo_in_a_top_level_section():
    text = BASE_CONFIG.replace("holds:\n", "holdz:\n")
    error = refused(text)
    assert error.key_path == "holdz"
    assert error.line == line_of(text, "holdz:")


def test_typo_in_a_nested_section():
    text = BASE_CONFIG.replace("  key_cache_seconds: 60", "  key_cache_secs: 60")
    error = refused(text)
    assert error.key_path == "auth.key_cache_secs"
    assert error.line == line_of(text, "key_cache_secs")


def test_wrong_type_names_the_path_and_line():
    text = BASE_CONFIG.replace("pool_size: 20", "pool_size: lots")
    error = refused(text)
    assert error.key_path == "database.pool_size"
    assert error.line == line_of(text, "pool_size: lots")
    assert "Expected `int`" in error.message


def test_invalid_choice():
    text = BASE_CONFIG.replace("  unit: second ", "  unit: fortnight ")
    assert text.count("fortnight") == 1
    error = refused(text)
    assert error.key_path == "rate_limits.unit"
    assert error.line == line_of(text, "unit: fortnight")
    assert "fortnight" in error.message


def test_missing_required_value():
    text = BASE_CONFIG.replace(
        '    maximum_top_up: 1000000\n    minor_units: 2\n    symbol: "€"',
        '    minor_units: 2\n    symbol: "€"',
    )
    assert text != BASE_CONFIG
    error = refused(text)
    assert error.key_path == "currencies.eur"
    assert error.line == line_of(text, "  eur:")
    assert "maximum_top_up" in error.message


def test_a_rule_broken_inside_a_section():
    text = BASE_CONFIG.replace("    maximum_top_up: 1000000    # $10,000.00", "    maximum_top_up: 100")
    error = refused(text)
    assert error.key_path == "currencies.usd"
    assert error.line == line_of(text, "  usd:")
    assert "maximum_top_up" in error.message


def test_negative_price_and_plugin_settings_in_the_core_schema():
    error = refused(BASE_CONFIG.replace("    price: 0.79", "    price: -1"))
    assert error.key_path == "channels.sms"
    # tiers and alert levels belong to their plugins' sections (plugins.tiers, plugins.alerts)
    text = BASE_CONFIG.replace("    price: 0.79", "    price: 0.79\n    tiers:\n      - from_units: 1000")
    error = refused(text)
    assert error.key_path == "channels.sms.tiers"
    assert error.line == line_of(text, "tiers:")
    error = refused(BASE_CONFIG + "\nalerts:\n  thresholds_cents: [1000]\n")
    assert error.key_path == "alerts"


def test_default_currency_must_be_declared():
    error = refused(BASE_CONFIG.replace("default_currency: usd", "default_currency: gbp"))
    assert "gbp" in error.message
    assert "default_currency" in error.message


@pytest.mark.parametrize(
    ("text", "needle"),
    [("", "empty"), ("- a\n- b\n", "mapping"), ("database: [1, \n", "")],
    ids=["empty", "not-a-mapping", "broken-yaml"],
)
def test_not_a_config_at_all(text, needle):
    error = refused(text)
    assert needle in error.message
    if text.startswith("database"):
        assert error.line is not None


def test_unreadable_file(tmp_path: Path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "missing.yaml")
    assert "missing.yaml" in str(caught.value)


# -- interpolation ---------------------------------------------------------------------------------


def test_env_values_are_typed_like_yaml():
    config, _ = load_config_text(
        BASE_CONFIG,
        environ={
            "BILLFOLD_PORT": "9001",
            "BILLFOLD_WORKERS": "4",
            "BILLFOLD_WORKER_IN_PROCESS": "false",
            "BILLFOLD_RATE_LIMIT": "12",
            "BILLFOLD_ENV": "production",
            "BILLFOLD_HOST": "0.0.0.0",
        },
    )
    assert config.server.port == 9001
    assert type(config.server.port) is int
    assert config.server.workers == 4
    assert config.worker.in_process is False
    assert config.rate_limits.requests == 12
    assert config.environment == "production"
    assert config.is_production
    assert config.server.host == "0.0.0.0"


def test_defaults_are_typed_like_yaml():
    config, _ = load_config_text(BASE_CONFIG, environ={})
    assert config.server.port == 8000 and type(config.server.port) is int
    assert config.worker.in_process is True
    assert config.rate_limits.requests == 200


def test_interpolation_forms():
    text = BASE_CONFIG.replace(
        "  monthly_limit_cents: null    # null = no cap", "  monthly_limit_cents: ${CAP:-null}"
    )
    text = text.replace('    symbol: "$"', '    symbol: "${SYMBOL:-$}"')
    text = text.replace(
        "  url: ${BILLFOLD_DATABASE_URL:-sqlite+aiosqlite:///billfold.db}",
        "  url: sqlite+aiosqlite:///${DB_DIR:-/tmp}/${DB_NAME}.db",
    )
    config, _ = load_config_text(text, environ={"DB_NAME": "main", "SYMBOL": "100"})
    assert config.auto_reload.monthly_limit_cents is None
    assert config.currencies["usd"].symbol == "100"  # quoted: stays a string
    assert config.database.url == "sqlite+aiosqlite:////tmp/main.db"

    config, _ = load_config_text(text, environ={"DB_NAME": "x", "CAP": "25000", "DB_DIR": "/srv"})
    assert config.auto_reload.monthly_limit_cents == 25000
    assert config.database.url == "sqlite+aiosqlite:////srv/x.db"

    # an empty variable falls back to its default
    config, _ = load_config_text(text, environ={"DB_NAME": "x", "CAP": ""})
    assert config.auto_reload.monthly_limit_cents is None


def test_unset_variable_without_default_is_refused_with_its_line():
    text = BASE_CONFIG.replace("  pool_size: 20", "  pool_size: ${POOL_SIZE}")
    error = refused(text)
    assert "POOL_SIZE" in error.message
    assert error.line == line_of(text, "POOL_SIZE")


def test_env_value_of_the_wrong_type_is_refused_at_its_key():
    error = refused(BASE_CONFIG, environ={"BILLFOLD_PORT": "eighty"})
    assert error.key_path == "server.port"
    assert error.line == line_of(BASE_CONFIG, "  port:")


def test_database_url_from_the_environment_wins():
    text = BASE_CONFIG.replace(
        "  url: ${BILLFOLD_DATABASE_URL:-sqlite+aiosqlite:///billfold.db}",
        "  url: sqlite+aiosqlite:///config.db",
    )
    config, _ = load_config_text(text, environ={})
    assert config.database.url == "sqlite+aiosqlite:///config.db"
    config, _ = load_config_text(text, environ={"BILLFOLD_DATABASE_URL": "postgresql://db/billfold"})
    assert config.database.url == "postgresql://db/billfold"
    # also when the file has no database section at all
    without = text.replace(
        "database:\n  url: sqlite+aiosqlite:///config.db\n  pool_size: 20\n  max_overflow: 10\n", ""
    )
    assert "database:" not in without
    config, _ = load_config_text(without, environ={"BILLFOLD_DATABASE_URL": "postgresql://db/b"})
    assert config.database.url == "postgresql://db/b"


# -- plugin sections -------------------------------------------------------------------------------


def test_unknown_plugin_section_is_refused(make_state):
    from conftest import config_text

    with pytest.raises(ConfigError) as caught:
        make_state({"plugins": {"nosuchplugin": {"x": 1}}})
    error = caught.value
    assert error.key_path == "plugins.nosuchplugin"
    text = config_text({"plugins": {"nosuchplugin": {"x": 1}}}, database_url="sqlite+aiosqlite:///x.db")
    assert error.line == line_of(text, "nosuchplugin:")
    assert "nosuchplugin" in str(error)


# -- the command line ------------------------------------------------------------------------------


async def test_cli_config_check(tmp_path: Path):
    """`billfold config check PATH` accepts the shipped file and refuses bad ones with path and line;
    every other command refuses to run on an invalid config."""
    typo = BASE_CONFIG.replace("    minimum_top_up: 500        # $5.00", "    minimun_top_up: 500")
    plugin = BASE_CONFIG.replace("plugins:\n", "plugins:\n  stripey:\n    api_key: x\n")
    wrong = BASE_CONFIG.replace("pool_size: 20", "pool_size: lots")
    files = {}
    for name, text in (("typo", typo), ("plugin", plugin), ("wrong", wrong)):
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_text(text)
    url = f"sqlite+aiosqlite:///{tmp_path}/unused.db"

    shipped, typoed, unknown_plugin, other_command = await asyncio.gather(
        asyncio.to_thread(run_cli, "config", "check", "config/billing.yaml", database_url=url),
        asyncio.to_thread(run_cli, "config", "check", str(files["typo"]), database_url=url),
        asyncio.to_thread(run_cli, "config", "check", str(files["plugin"]), database_url=url),
        asyncio.to_thread(
            run_cli, "ledger", "verify", database_url=url, env={"BILLFOLD_CONFIG": str(files["wrong"])}
        ),
    )

    assert shipped.returncode == 0, shipped.stderr
    assert shipped.stdout.startswith("ok: config/billing.yaml")

    assert typoed.returncode == 1
    assert f"{files['typo']}:{line_of(typo, 'minimun_top_up')}" in typoed.stderr
    assert "currencies.usd.minimun_top_up" in typoed.stderr

    assert unknown_plugin.returncode == 1
    assert f"{files['plugin']}:{line_of(plugin, 'stripey:')}" in unknown_plugin.stderr
    assert "plugins.stripey" in unknown_plugin.stderr

    assert other_command.returncode == 1
    assert f"{files['wrong']}:{line_of(wrong, 'pool_size')}" in other_command.stderr
    assert "database.pool_size" in other_command.stderr

    for result in (typoed, unknown_plugin, other_command):
        assert "Traceback" not in result.stderr


def test_config_structs_are_frozen():
    config, _ = load_config_text(BASE_CONFIG, environ={})
    with pytest.raises(AttributeError):
        config.currencies["usd"].minimum_top_up = 1  # type: ignore[misc]
    assert msgspec.structs.asdict(config.holds) == {
        "default_expires_in_seconds": 900,
        "max_expires_in_seconds": 604800,
    }
