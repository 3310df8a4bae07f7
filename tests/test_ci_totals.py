"""CI's last line: the totals over every JUnit report (scripts/junit_totals.py)."""

from __future__ import annotations

import subprocess
import sys

from service.config import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "junit_totals.py"


def test_the_last_line_is_the_plain_totals_over_every_report(tmp_path):
    (tmp_path / "pytest.junit.xml").write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase name="a"/><testcase name="b"/>'
        '<testcase name="c"><skipped/></testcase>'
        '<testcase name="d"><failure message="x"/></testcase>'
        "</testsuite></testsuites>"
    )
    (tmp_path / "contract.junit.xml").write_text(
        '<testsuite name="schemathesis"><testcase name="e"/>'
        '<testcase name="f"><error message="y"/></testcase></testsuite>'
    )
    reports = sorted(str(path) for path in tmp_path.glob("*.xml"))
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *reports, str(tmp_path / "missing.xml")],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert lines[-1] == "3 passed, 2 failed, 1 skipped"
    assert lines[-2] == "totals from 2 JUnit reports:"
