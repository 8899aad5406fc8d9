"""Who may read a file that holds a secret: `check`'s rule, on real files with the group's
accounts given (the host's groups differ from machine to machine)."""

from __future__ import annotations

from pathlib import Path

from callrec.cli.serve import readable_by_others, secrets_in_file


def test_readable_by_every_account_is_always_exposed(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text("x")
    for mode in (0o644, 0o604, 0o444):
        f.chmod(mode)
        assert readable_by_others(f, lambda gid: set()) == f"readable by every account on this host (mode {mode:o})"
    f.chmod(0o600)
    assert readable_by_others(f, lambda gid: {"alice", "bob", "carol"}) is None


def test_group_readable_is_exposed_only_when_the_group_is_more_than_the_daemon(tmp_path: Path) -> None:
    """root:callrec mode 640 (the documented install) is fine; a group of several people is not."""
    f = tmp_path / "secret"
    f.write_text("x")
    f.chmod(0o640)
    assert readable_by_others(f, lambda gid: {"callrec"}) is None
    why = readable_by_others(f, lambda gid: {"callrec", "alice", "bob"})
    assert why is not None and why.startswith("readable by group ") and "(mode 640; 3 accounts: alice, bob, callrec)" \
        in why, why


def test_secrets_in_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[asterisk]\nari_password = "x"\nami_password = ""\n[database]\n'
                 'dsn = "postgresql://callrec@127.0.0.1/callrec"\n[hooks]\nwebhook_hmac_key = "k"\n')
    assert secrets_in_file(f) == ["asterisk.ari_password", "hooks.webhook_hmac_key"]
    f.write_text('[database]\ndsn = "postgresql://callrec:pw@127.0.0.1/callrec"\n')
    assert secrets_in_file(f) == ["database.dsn"]
