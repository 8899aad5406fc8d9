"""Configuration: settings from TOML + environment (settings.py, dataops.py), shared field helpers
(fields.py) and the generated reference page (reference.py).

``callrec.config.settings`` stays the home of every name re-exported here.
"""

from callrec.config.alerts import AlertRule, AlertSettings
from callrec.config.dataops import IntegritySettings, RetentionRule, RetentionSettings
from callrec.config.fields import ConfigError
from callrec.config.settings import (
    AgiSettings,
    AsteriskSettings,
    DatabaseSettings,
    HookSettings,
    HttpSettings,
    LogSettings,
    NoticeSettings,
    PolicyRule,
    PolicySettings,
    RecordingSettings,
    Settings,
    SpeechSettings,
    load_settings,
    parse_settings,
)

__all__ = [
    "AgiSettings", "AlertRule", "AlertSettings", "AsteriskSettings", "ConfigError", "DatabaseSettings",
    "HookSettings", "HttpSettings", "IntegritySettings", "LogSettings", "NoticeSettings", "PolicyRule",
    "PolicySettings", "RecordingSettings", "RetentionRule", "RetentionSettings", "Settings", "SpeechSettings",
    "load_settings", "parse_settings",
]
