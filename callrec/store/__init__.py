"""PostgreSQL: migrations, the connection pool, and the call-log writer."""

from callrec.store.calllog import CallLogWriter
from callrec.store.db import connect_pool, fetch_calls
from callrec.store.migrate import MigrationError, migrate

__all__ = ["CallLogWriter", "MigrationError", "connect_pool", "fetch_calls", "migrate"]
