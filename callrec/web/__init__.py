"""The ops HTTP API (and, through the same app, the web console): aiohttp, served by `callrec serve`."""

from callrec.web.app import make_app

__all__ = ["make_app"]
