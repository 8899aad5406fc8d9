"""The hand-back variables in as few ARI requests as Asterisk allows (``ARRAY()``), each value unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from caller import Tester

from callrec.doors.ari import array_safe, set_variables

TRICKY = {
    "CALLREC_T_PLAIN": "implied",
    "CALLREC_T_EMPTY": "",
    "CALLREC_T_PARENS": "yes: rule support-qa (callee side); sampled out at 20%",
    "CALLREC_T_PATH": "/var/spool/asterisk/monitor/2026/12/06/x [1].wav",
    "CALLREC_T_OTHER": " {a}|$b 'c' ünï ",
    # ARRAY() would split or rewrite these: each goes in a request of its own.
    "CALLREC_T_COMMA": "a,b",
    "CALLREC_T_QUOTE": 'say "hi"',
    "CALLREC_T_BACKSLASH": "back\\slash",
    "CALLREC_T_OPEN": "(a",
    "CALLREC_T_CLOSE": "a) (b",
}


@pytest.mark.parametrize("variables", [TRICKY, {"CALLREC_T_ONLY": "granted"},
                                       {k: TRICKY[k] for k in ("CALLREC_T_COMMA", "CALLREC_T_PLAIN")}])
async def test_variables_arrive_unchanged_in_fewer_requests(tester: Tester, variables: dict[str, str]) -> None:
    call = await tester.place_call(args="mode=notice")
    await call.answered()  # the caller leg waits in the tester's Stasis app, where variables can be set
    sent: list[tuple[str, Any]] = []
    request = tester.ari.request

    async def counting(method: str, path: str, params: dict[str, Any] | None = None, body: Any = None) -> Any:
        sent.append((path, params))
        return await request(method, path, params, body)

    tester.ari.request = counting  # type: ignore[method-assign]
    try:
        await set_variables(tester.ari, call.caller_id, variables)
    finally:
        del tester.ari.request
    got = {name: await tester.ari.get_variable(call.caller_id, name) for name in variables}
    assert got == variables
    safe = [k for k, v in variables.items() if array_safe(v)]
    expected = len(variables) - len(safe) + 1 if len(safe) > 1 else len(variables)
    assert len(sent) == expected, sent
    if len(variables) == len(TRICKY):
        assert len(sent) == 6  # five unsafe values, one ARRAY for the other five
        assert sorted(safe) == sorted(k for k in TRICKY if k in ("CALLREC_T_PLAIN", "CALLREC_T_EMPTY",
                                                              "CALLREC_T_PARENS", "CALLREC_T_PATH",
                                                              "CALLREC_T_OTHER"))


def test_array_safe_values() -> None:
    assert array_safe("x (y, z)") is False  # a comma anywhere: not worth the parser's rules
    assert array_safe("no: rule a (caller side) over yes") and array_safe("") and array_safe("x[1]")
    assert not array_safe("(a") and not array_safe("a)") and not array_safe("]a[") and not array_safe('"')
