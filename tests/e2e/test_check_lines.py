"""`callrec check`'s lines beyond reaching things: a line for each feature even when it is off, and
warnings about what the config leaves exposed (a config file or signing key that others can read
while it holds secrets, an HTTP API beyond this host without TLS in front).  Through the real
command, with a real PostgreSQL database; Asterisk is not needed (its lines fail, these lines do
not depend on it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import REPO
from support.cli import run_cli

# An Asterisk nobody listens on: ARI and AMI fail at once; `check` goes on with its other lines.
NO_ASTERISK = 'ari_url = "http://127.0.0.1:1"\nami_port = 1\nrequest_timeout = 1\n'


def config(tmp_path: Path, database: str, extra: str = "", secrets: bool = True) -> Path:
    path = tmp_path / "callrec.toml"
    passwords = 'ari_password = "ari-pw-in-file"\nami_password = "ami-pw-in-file"\n' if secrets else ""
    path.write_text(f'[asterisk]\n{passwords}{NO_ASTERISK}[database]\ndsn = "{database}"\n'
                    f'[recordings]\ndir = "/var/spool/asterisk/callrec"\nlocal_dir = "{tmp_path}"\n'
                    f'[notice]\nprompts_dir = "{REPO}/sounds"\n{extra}')
    path.chmod(0o600)
    return path


ENV_SECRETS = {"CALLREC_ASTERISK_ARI_PASSWORD": "a", "CALLREC_ASTERISK_AMI_PASSWORD": "b"}


def warnings(cfg: Path, env: dict[str, str] | None = None) -> list[str]:
    result = run_cli(cfg, "check", env=env)
    assert "Traceback" not in result.stderr, result.stderr
    assert any(line.startswith("ok   postgresql: ") for line in result.stdout.splitlines()), result.stdout
    assert "pw-in-file" not in result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if line.startswith("warn ")]


def test_a_config_file_others_can_read_with_secrets_in_it(tmp_path: Path, database: str) -> None:
    cfg = config(tmp_path, database)
    assert warnings(cfg) == []  # mode 600
    cfg.chmod(0o644)
    (line,) = warnings(cfg)
    assert line == (f"warn config: {cfg} holds asterisk.ari_password, asterisk.ami_password and is readable by "
                    "every account on this host (mode 644): chmod 640 with the daemon's own group (or 600), or "
                    "move the secrets to the environment file")
    # The same mode with the secrets in the environment: nothing to warn about.
    cfg = config(tmp_path, database, secrets=False)
    cfg.chmod(0o644)
    assert warnings(cfg, ENV_SECRETS) == []


def test_a_signing_key_others_can_read(tmp_path: Path, database: str) -> None:
    key = tmp_path / "signing-key.pem"
    cfg = config(tmp_path, database, f'[integrity]\nsigning_key = "{key}"\n')
    assert run_cli(cfg, "keys", "generate").returncode == 0
    assert warnings(cfg) == []  # keys generate writes mode 600
    key.chmod(0o604)
    (line,) = warnings(cfg)
    assert line == (f"warn signing key: integrity.signing_key: {key} (the private key) is readable by every "
                    "account on this host (mode 604): chmod 600")
    os.chmod(key, 0o600)
    assert warnings(cfg) == []


def test_an_http_api_beyond_loopback_without_tls_in_front(tmp_path: Path, database: str) -> None:
    cfg = config(tmp_path, database, '[http]\nlisten = "0.0.0.0:8090"\n')
    (line,) = warnings(cfg)
    assert line.startswith("warn http: http.listen 0.0.0.0:8090 is not a loopback address and the API speaks "
                           "plain HTTP") and "put TLS in front" in line, line
    # Loopback, or a TLS proxy declared in front (the cookie is Secure): no warning.
    for http in ('listen = "127.0.0.1:8090"', 'listen = "[::1]:8090"', 'listen = "localhost:8090"',
                 'listen = "0.0.0.0:8090"\ncookie_secure = true', 'enabled = false\nlisten = "0.0.0.0:8090"'):
        assert warnings(config(tmp_path, database, f"[http]\n{http}\n")) == [], http


def test_a_fastagi_door_beyond_loopback(tmp_path: Path, database: str) -> None:
    (line,) = warnings(config(tmp_path, database, '[agi]\nlisten = "0.0.0.0:4573"\n'))
    assert line.startswith("warn agi: agi.listen 0.0.0.0:4573 is not a loopback address: FastAGI has no "
                           "authentication"), line


def test_features_that_are_off_still_have_their_line(tmp_path: Path, database: str) -> None:
    """Before, hooks, retention and the signing key printed nothing when off: an admin could not
    tell "off" from "not checked"."""
    cfg = config(tmp_path, database, '[http]\nenabled = false\n')
    lines = run_cli(cfg, "check").stdout.splitlines()
    for line in ("ok   hooks: off (no hooks.command, no hooks.webhook_url)",
                 "ok   retention: off (no audio_days or metadata_days set: recordings and rows are kept forever)",
                 "ok   signing key: off (integrity.signing_key not set: evidence exports cannot be signed)",
                 "ok   http: off (the ops API and console are not served)"):
        assert line in lines, (line, lines)
    key = tmp_path / "signing-key.pem"
    cfg = config(tmp_path, database, '[hooks]\ncommand = ["/bin/true"]\n[retention]\naudio_days = 30\n'
                                     f'[integrity]\nsigning_key = "{key}"\n')
    assert run_cli(cfg, "keys", "generate").returncode == 0
    lines = run_cli(cfg, "check").stdout.splitlines()
    assert "ok   hooks: command /bin/true" in lines
    assert any(line.startswith("ok   retention: audio 30 day(s), metadata kept forever") for line in lines), lines
    assert any(line.startswith("ok   signing key: Ed25519, fingerprint ") for line in lines), lines
    assert "ok   http: ops API and console on 127.0.0.1:8090" in lines


def test_speech_line_off_shipped_model_and_a_broken_model_folder(tmp_path: Path, database: str,
                                                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    """Speech analytics gets its line: off, the model found and hash-checked, or the setting that is wrong (so a
    broken model shows in `check`, not first in a worker's log)."""
    lines = run_cli(config(tmp_path, database), "check").stdout.splitlines()
    assert "ok   speech: off (speech.enabled = false: recordings are not transcribed)" in lines, lines
    cache = tmp_path_factory.mktemp("speech-cache")  # not inside the recordings folder (tmp_path)
    cfg = config(tmp_path, database, f'[speech]\nenabled = true\nworkers = 1\ncache_dir = "{cache}"\n')
    result = run_cli(cfg, "check")
    line = next((x for x in result.stdout.splitlines() if " speech: " in x), result.stdout + result.stderr)
    assert line.startswith("ok   speech: model whisper-base:d01c3014881c in "), line
    assert line.endswith(", 1 worker(s), transcribe = all"), line
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "model.bin").write_bytes(b"not a model")
    cfg = config(tmp_path, database, f'[speech]\nenabled = true\nworkers = 1\nmodel_dir = "{broken}"\n')
    result = run_cli(cfg, "check")
    line = next((x for x in result.stdout.splitlines() if " speech: " in x), result.stdout + result.stderr)
    assert line.startswith(f"FAIL speech: speech.model_dir: {broken} has no "), line
    assert result.returncode == 1


def test_journal_line_empty_with_pending_calls_and_unwritable(tmp_path: Path, database: str) -> None:
    """The call-log journal: where it is, whether an earlier run left calls in it, and a folder the daemon could
    not write to (which would only show when PostgreSQL went away)."""
    from callrec.store.journal import Journal

    folder = tmp_path / "journal"
    cfg = config(tmp_path, database)
    text = cfg.read_text().replace("[database]\n", f'[database]\njournal_dir = "{folder}"\n')
    cfg.write_text(text)
    lines = run_cli(cfg, "check").stdout.splitlines()
    assert f"ok   journal: {folder}: empty" in lines, lines  # not there yet: serve creates it
    journal = Journal(folder, 1 << 20)
    journal.open()
    journal.append([("c1", {"consent": "accepted"}), ("c2", {"consent": "declined"}), ("c1", {"duration": 3.5})])
    journal.close()
    lines = run_cli(cfg, "check").stdout.splitlines()
    assert f"ok   journal: {folder}: 2 call(s) journaled, not yet confirmed written" in lines, lines
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg.write_text(text.replace(str(folder), str(blocker / "journal")))
    result = run_cli(cfg, "check")
    assert f"FAIL journal: database.journal_dir: {blocker} is not a folder this account can write to" \
        in result.stdout.splitlines(), result.stdout
    assert result.returncode == 1
