"""PostgreSQL: migrations, the connection pool, and the call-log writer."""

from .calllog import CallLogWriter
from .db import connect_pool, fetch_calls
from .migrate import MigrationError, migrate

__all__ = ["CallLogWriter", "MigrationError", "connect_pool", "fetch_calls", "migrate"]
