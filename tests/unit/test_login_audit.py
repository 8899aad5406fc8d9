"""Throttled log-ins are audited aggregated (web/routes_auth.ThrottledAudit): per key and window,
the first attempt at once and the rest in one entry when the window closes; counts add up."""

from __future__ import annotations

from callrec.web.routes_auth import ThrottledAudit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def counts(entries: list[dict]) -> list[tuple[str, int]]:
    return [(e["details"]["key"], e["details"]["count"]) for e in entries]


def test_one_entry_at_the_first_attempt_and_one_per_closed_window() -> None:
    clock = Clock()
    agg = ThrottledAudit(window=60, clock=clock)
    written: list[dict] = []
    written += agg.note("remote:10.0.0.1", "alice", "10.0.0.1")
    for i in range(999):  # a guesser rotating user names from one address
        written += agg.note("remote:10.0.0.1", f"user{i}", "10.0.0.1")
        clock.now += 0.01
    assert counts(written) == [("remote:10.0.0.1", 1)]
    assert agg.due() == []  # the window is still open
    clock.now += 60
    written += agg.due()
    assert counts(written) == [("remote:10.0.0.1", 1), ("remote:10.0.0.1", 999)]
    last = written[-1]["details"]
    assert last["users_distinct"] == 1000 and len(last["users"]) == 20  # bounded
    # The next window starts afresh; an attempt after the window also closes the old one itself.
    written += agg.note("remote:10.0.0.1", "alice", "10.0.0.1")
    written += agg.note("remote:10.0.0.1", "alice", "10.0.0.1")
    clock.now += 61
    written += agg.note("remote:10.0.0.1", "alice", "10.0.0.1")
    written += agg.close_all()
    assert counts(written)[2:] == [("remote:10.0.0.1", 1), ("remote:10.0.0.1", 1), ("remote:10.0.0.1", 1)]
    assert sum(c for _, c in counts(written)) == 1000 + 3


def test_keys_are_apart_and_memory_is_bounded() -> None:
    clock = Clock()
    agg = ThrottledAudit(window=60, max_keys=3, clock=clock)
    written: list[dict] = []
    for n in range(5):
        for _ in range(4):
            written += agg.note(f"user:u{n}", f"u{n}", None)
    written += agg.close_all()
    assert sorted(counts(written)) == sorted([(f"user:u{n}", c) for n in range(5) for c in (1, 3)])
    assert all(e["action"] == "login_failed" and e["details"]["reason"] == "throttled" for e in written)
