"""`callrec policy explain` as an admin runs it: no Asterisk, no database."""

from __future__ import annotations

from pathlib import Path

from support.cli import offline_config
from support.cli import run_cli as run


def test_policy_explain_names_the_rule_and_why(tmp_path: Path) -> None:
    cfg = offline_config(tmp_path)
    result = run(cfg, "policy", "explain", "--caller", "+4930123", "--did", "8001", "--queue", "trading")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "call: caller '+4930123'  did '8001'  context ''  extension ''  queue 'trading'" in out
    assert "rule legal-never (caller side; caller=+49*): matches; caller side says never" in out
    assert "decided by the callee side: force (both sides override; the callee side (later in the call) wins)" in out
    assert "force: consent mode opt-out becomes notice" in out
    assert "outcome: RECORDED after the notice (notice mode, en/notice)" in out
    assert "stereo true" in out

    result = run(cfg, "policy", "explain", "--caller", "5551", "--did", "8001", "--arg", "mode=opt-in",
                 "--arg", "colour=red")
    out = result.stdout
    assert result.returncode == 0
    assert "QA sampling (rule support.sample_percent): 20% of these calls are recorded" in out
    assert "warning: argument 'colour' ignored" in out
    assert "warning: prompt 'support-greeting' is not installed" in out

    result = run(cfg, "policy", "explain", "--caller", "+4930", "--did", "100")
    assert "outcome: NOT RECORDED; no notice is played; CALLREC_CONSENT=not_asked" in result.stdout
    assert "CALLREC_REASON=never: rule legal-never (caller side)" in result.stdout


def test_bad_policy_config_is_one_line(tmp_path: Path) -> None:
    cfg = offline_config(tmp_path, '\n[[policy.rules]]\nname = "x"\ndid = "1"\nrecord = "always"\n')
    result = run(cfg, "policy", "explain", "--did", "1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "callrec: config error: policy.rules[3].record: expected one of force, yes, dontcare, no, never, "
        "got 'always'"]
