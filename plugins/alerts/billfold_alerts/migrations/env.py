import billfold_alerts.models  # noqa: F401  (puts the tables on the plugin's MetaData)
from billfold import plugin_metadata, run_plugin_migrations

run_plugin_migrations(plugin_metadata("alerts"))
