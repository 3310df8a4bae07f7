"""What the contract run's requests got, per operation, from the server's access log.

Usage: contract_summary.py SERVER_LOG OPENAPI_JSON [--label L] [--schemathesis-log FILE]
                           [--require-201 opId,opId,...]

Reads the ``storekeeper.access`` lines of the server log (``<METHOD> <path> <status>
<ms>ms request_id=...``), maps each request to the spec's operation by method and path
template, and prints one row per operation: requests, then counts per status class (429 on
its own, apart from the other 4xx). With ``--schemathesis-log`` it adds schemathesis' own
figures (test cases, failures, links covered) from its output.

Exit code 1 if an operation of ``--require-201`` (default: the stock document operations)
got no 201 at all, or is not in the spec: "the fuzzing run reaches 201 on every stock
document operation" is then enforced, not just observed. Exit code 2 if the inputs cannot be
read. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

STOCK_DOCUMENT_OPERATIONS = (
    "createReceipt",
    "createShipment",
    "createTransfer",
    "createAdjustment",
    "reverseStockMovement",
)
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# 2026-12-02 03:02:56,812 INFO storekeeper.access GET /health/ready 200 9.2ms request_id=...
ACCESS_LINE = re.compile(
    r"storekeeper\.access (?P<method>[A-Z]+) (?P<path>.*) (?P<status>\d{3}) [\d.]+ms request_id="
)
COLUMNS = ("2xx", "3xx", "4xx", "429", "5xx")
OTHER = "(not an operation of the spec)"


def operation_matchers(spec: dict) -> list[tuple[int, int, str, re.Pattern[str], str]]:
    """(parameter count, -length, method, path regex, operationId), most specific first."""
    matchers = []
    for template, item in (spec.get("paths") or {}).items():
        pattern = "".join(
            "[^/]+" if part.startswith("{") else re.escape(part)
            for part in re.split(r"(\{[^}]+\})", template)
        )
        parameters = template.count("{")
        for method, operation in item.items():
            if method not in METHODS or not isinstance(operation, dict):
                continue
            name = operation.get("operationId") or f"{method.upper()} {template}"
            matchers.append(
                (parameters, -len(template), method.upper(), re.compile(f"^{pattern}$"), name)
            )
    matchers.sort(key=lambda m: (m[0], m[1]))
    return matchers


def classify(status: int) -> str:
    return "429" if status == 429 else f"{status // 100}xx"


def tally(log_lines, matchers) -> tuple[dict[str, Counter], dict[str, Counter]]:
    """Per operation: status classes, and exact statuses."""
    classes: dict[str, Counter] = defaultdict(Counter)
    statuses: dict[str, Counter] = defaultdict(Counter)
    for line in log_lines:
        match = ACCESS_LINE.search(line)
        if match is None:
            continue
        method, path, status = match["method"], match["path"], int(match["status"])
        name = next(
            (m[4] for m in matchers if m[2] == method and m[3].match(path)),
            OTHER,
        )
        classes[name][classify(status)] += 1
        statuses[name][status] += 1
    return classes, statuses


def schemathesis_figures(text: str) -> list[tuple[str, str]]:
    """The few numbers worth quoting from schemathesis' output (plain or with colours).

    The output may hold several runs, each introduced by the ``+ schemathesis ... --phases X``
    line contract-live.sh writes: their figures are named after their phases. Rendered as
    ``name=number``: a line such as "4831 passed" reads like a test runner's closing line to
    the CI log reader, and this output is not one.
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    runs = re.split(r"^(?=\+ schemathesis )", text, flags=re.MULTILINE)
    runs = [run for run in runs if "Test cases:" in run or "API Links:" in run]
    figures = []
    for run in runs:
        phases = re.search(r"--phases[ =](\S+)", run.split("\n", 1)[0])
        prefix = f"[{phases[1]}] " if phases and len(runs) > 1 else ""
        figures.extend((prefix + name, value) for name, value in _run_figures(run))
    return figures


def _run_figures(text: str) -> list[tuple[str, str]]:
    figures = []
    # "  4831 generated, 4831 passed" or "  4831 generated, 3 found 2 unique failures, ..."
    cases = re.search(r"Test cases:\s*\n\s*(.+)", text)
    if cases:
        pairs = re.findall(r"(\d+) (?:found (\d+) )?([a-z ]+?)(?:,|$)", cases[1].strip())
        rendered = []
        for count, unique, word in pairs:
            if unique:
                rendered.append(f"with_failures={count} unique_failures={unique}")
            else:
                rendered.append(f"{word.strip().replace(' ', '_')}={count}")
        figures.append(("test cases", " ".join(rendered) or cases[1].strip()))
    links = re.search(r"API Links:\s*(.+)", text)
    if links:
        figures.append(("stateful links", links[1].strip()))
    scenarios = re.search(r"Scenarios:\s*(\d+)", text)
    if scenarios:
        figures.append(("stateful scenarios", scenarios[1]))
    return figures


def render(classes: dict[str, Counter], label: str) -> list[str]:
    names = sorted(n for n in classes if n != OTHER) + ([OTHER] if OTHER in classes else [])
    width = max([len("operation"), *(len(n) for n in names)])
    header = f"{'operation':<{width}}  {'requests':>8}" + "".join(f"  {c:>6}" for c in COLUMNS)
    lines = [f"contract summary ({label}): responses per operation, from the access log", header]
    lines.append("-" * len(header))
    totals: Counter = Counter()
    for name in names:
        counts = classes[name]
        totals.update(counts)
        lines.append(
            f"{name:<{width}}  {sum(counts.values()):>8}"
            + "".join(f"  {counts.get(c, 0):>6}" for c in COLUMNS)
        )
    lines.append("-" * len(header))
    lines.append(
        f"{'all requests':<{width}}  {sum(totals.values()):>8}"
        + "".join(f"  {totals.get(c, 0):>6}" for c in COLUMNS)
    )
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("server_log", type=Path)
    parser.add_argument("openapi_json", type=Path)
    parser.add_argument("--label", default="contract")
    parser.add_argument("--schemathesis-log", type=Path)
    parser.add_argument(
        "--require-201",
        default=",".join(STOCK_DOCUMENT_OPERATIONS),
        help="comma-separated operationIds that must have answered 201 at least once",
    )
    args = parser.parse_args(argv)

    try:
        spec = json.loads(args.openapi_json.read_text(encoding="utf-8"))
        log_lines = args.server_log.read_text(encoding="utf-8", errors="replace").splitlines()
    except (OSError, ValueError) as exc:
        print(f"contract summary: cannot read the inputs: {exc}", file=sys.stderr)
        return 2

    matchers = operation_matchers(spec)
    classes, statuses = tally(log_lines, matchers)
    lines = render(classes, args.label)

    if args.schemathesis_log is not None:
        try:
            text = args.schemathesis_log.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            lines.append(f"schemathesis output unreadable: {exc}")
        else:
            for name, value in schemathesis_figures(text):
                lines.append(f"schemathesis {name}: {value}")

    known = {m[4] for m in matchers}
    required = [name.strip() for name in args.require_201.split(",") if name.strip()]
    missing = []
    reached = []
    for name in required:
        count = statuses.get(name, Counter()).get(201, 0)
        if name not in known:
            missing.append(f"{name} (not in the spec)")
        elif count == 0:
            missing.append(name)
        else:
            reached.append(f"{name} {count}")
    if reached:
        lines.append("201 answers: " + ", ".join(reached))
    print("\n".join(lines))
    if missing:
        print(
            f"contract summary ({args.label}): ERROR: no 201 answer for " + ", ".join(missing),
            file=sys.stderr,
        )
        return 1
    print(f"contract summary ({args.label}): every required operation answered 201 at least once")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
