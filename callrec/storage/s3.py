"""The bucket: a thin blocking wrapper over botocore's S3 client (the AWS SDK's core, no boto3 layer needed).

Credentials come from the environment only (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, optionally
``AWS_SESSION_TOKEN``): botocore's other sources (shared files, instance metadata) are not consulted, so no
hidden file and no network probe decides what callrec signs with, and nothing is fetched at start.  Errors become
``StorageUnavailable`` (try later) or ``ObjectMissing``; their text never carries a credential.
Every call blocks: callers run them off the event loop (``callrec.storage.store``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import IO, Any

import botocore.config
import botocore.session
from botocore.exceptions import BotoCoreError, ClientError

from callrec.config.storage import StorageSettings

__all__ = ["Bucket", "ObjectMissing", "StorageUnavailable", "credentials_from"]

READ_BLOCK = 256 * 1024


class StorageUnavailable(OSError):
    """The bucket could not be reached or refused the request (retry later; the message says why)."""


class ObjectMissing(FileNotFoundError):
    """No such object in the bucket."""


def credentials_from(environ: Mapping[str, str]) -> tuple[str, str, str | None]:
    key, secret = environ.get("AWS_ACCESS_KEY_ID", ""), environ.get("AWS_SECRET_ACCESS_KEY", "")
    if not key or not secret:
        raise StorageUnavailable('storage.kind = "s3" needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the '
                                 "environment (credentials are never read from the config file)")
    return key, secret, environ.get("AWS_SESSION_TOKEN") or None


def _brief(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"{err.get('Code', 'error')} (HTTP {status}): {str(err.get('Message', ''))[:200]}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _missing(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound") or exc.response.get("ResponseMetadata", {}).get(
        "HTTPStatusCode") == 404


class Bucket:
    def __init__(self, settings: StorageSettings, environ: Mapping[str, str] | None = None) -> None:
        key, secret, token = credentials_from(os.environ if environ is None else environ)
        self.name = settings.bucket
        self.prefix = settings.prefix
        session = botocore.session.Session()
        config = botocore.config.Config(
            connect_timeout=settings.timeout, read_timeout=settings.timeout, retries={"max_attempts": 2},
            s3={"addressing_style": settings.addressing}, signature_version="s3v4",
            # Ask for a checksum only where the API demands one: S3-compatible servers differ in what they accept.
            request_checksum_calculation="when_required", response_checksum_validation="when_required")
        self._client: Any = session.create_client(
            "s3", region_name=settings.region, endpoint_url=settings.endpoint or None, aws_access_key_id=key,
            aws_secret_access_key=secret, aws_session_token=token, config=config)

    def key(self, rel: str) -> str:
        return self.prefix + rel

    def where(self, rel: str) -> str:
        return f"s3://{self.name}/{self.key(rel)}"

    def _call(self, op: str, rel: str, **kw: Any) -> Any:
        try:
            return getattr(self._client, op)(Bucket=self.name, Key=self.key(rel), **kw)
        except ClientError as exc:
            if _missing(exc):
                raise ObjectMissing(2, "no such object", self.where(rel)) from None
            raise StorageUnavailable(f"{self.where(rel)}: {_brief(exc)}") from None
        except BotoCoreError as exc:
            raise StorageUnavailable(f"{self.where(rel)}: {_brief(exc)}") from None

    def put(self, rel: str, body: IO[bytes] | bytes, size: int) -> None:
        self._call("put_object", rel, Body=body, ContentLength=size)

    def size(self, rel: str) -> int:
        return int(self._call("head_object", rel)["ContentLength"])

    def exists(self, rel: str) -> bool:
        try:
            self.size(rel)
            return True
        except ObjectMissing:
            return False

    def get(self, rel: str) -> bytes:
        body = self._call("get_object", rel)["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    def read_range(self, rel: str, lo: int, hi: int) -> tuple[Iterator[bytes], int]:
        """The bytes [lo, hi] (inclusive) as a stream of blocks, and the object's whole size."""
        reply = self._call("get_object", rel, Range=f"bytes={lo}-{hi}")
        total = int(str(reply.get("ContentRange", "")).rpartition("/")[2] or reply["ContentLength"])
        body = reply["Body"]

        def blocks() -> Iterator[bytes]:
            try:
                while True:
                    try:
                        block = body.read(READ_BLOCK)
                    except (BotoCoreError, OSError) as exc:
                        raise StorageUnavailable(f"{self.where(rel)}: {_brief(exc)}") from None
                    if not block:
                        return
                    yield block
            finally:
                body.close()
        return blocks(), total

    def delete(self, rel: str) -> None:
        self._call("delete_object", rel)

    def check(self) -> None:
        """The bucket answers and these credentials may list it."""
        try:
            self._client.list_objects_v2(Bucket=self.name, Prefix=self.prefix, MaxKeys=1)
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnavailable(f"s3://{self.name}/{self.prefix}: {_brief(exc)}") from None

    def list(self) -> Iterator[tuple[str, int]]:
        """(path under the prefix, size) of every object under the prefix."""
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Bucket": self.name, "Prefix": self.prefix}
            if token:
                kw["ContinuationToken"] = token
            try:
                page = self._client.list_objects_v2(**kw)
            except (ClientError, BotoCoreError) as exc:
                raise StorageUnavailable(f"s3://{self.name}/{self.prefix}: {_brief(exc)}") from None
            for item in page.get("Contents", []):
                yield str(item["Key"])[len(self.prefix):], int(item["Size"])
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")
