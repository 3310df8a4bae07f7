"""Print the test totals of every JUnit XML report given, ending on the plain totals line.

CI ends with this so that a reader of the log (human or machine) sees the whole run's outcome
as its very last line, in the plain `N passed, N failed, N skipped` form, not the last tool's
own summary (the tools' full output is kept in artifacts/).
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path


def totals(paths: list[Path]) -> tuple[int, int, int]:
    passed = failed = skipped = 0
    for path in paths:
        for case in ElementTree.parse(path).getroot().iter("testcase"):
            outcomes = {child.tag for child in case}
            if outcomes & {"failure", "error"}:
                failed += 1
            elif "skipped" in outcomes:
                skipped += 1
            else:
                passed += 1
    return passed, failed, skipped


def main(argv: list[str]) -> int:
    paths = [Path(arg) for arg in argv if Path(arg).is_file()]
    passed, failed, skipped = totals(paths)
    print(f"totals from {len(paths)} JUnit reports:")
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
