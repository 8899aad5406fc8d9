"""(filled in below)"""

from aiohttp import web


def setup(app: web.Application) -> None:
    pass
