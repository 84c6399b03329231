"""What CI reads of a headless run: a JUnit XML file (--junit) and a Markdown summary appended to
$GITHUB_STEP_SUMMARY. Each check is a test case, and one more case is the run itself (Locust's
exit, or why the run could not be judged), so a run that failed only by Locust's count of
failed requests, or that never got to its checks, is never a green report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from swarm.cli.render import summary_rows
from swarm.errors import SwarmError
from swarm.locust.stats import Summary
from swarm.pipeline.judge import CheckResult, Verdict
from swarm.pipeline.run import RunOutcome

RUN_CASE = "locust run"
MARK = {"pass": "✅ pass", "fail": "❌ FAIL", "error": "⚠️ error", "skipped": "➖ not judged"}


@dataclass(frozen=True)
class Report:
    """A run as CI sees it: judged (an outcome), or not (the error that stopped it)."""

    stack: str
    verdict: Verdict
    why: str  # for a fail or an error: what, in one line
    run_id: str | None = None
    results_dir: Path | None = None
    locust_exit: int | None = None
    baseline: str | None = None
    checks: list[CheckResult] = field(default_factory=list)
    unjudged: list[str] = field(default_factory=list)  # checks never evaluated, as written
    summary: Summary | None = None

    @classmethod
    def of(cls, stack: str, outcome: RunOutcome) -> Report:
        j = outcome.judgement
        why = j.why
        if j.verdict == Verdict.INTERRUPTED:
            why = f"{j.why}: not judged; partial results in {outcome.results_dir}"
        judged = j.verdict != Verdict.INTERRUPTED
        return cls(
            stack,
            j.verdict,
            why,
            outcome.results_dir.name if outcome.results_dir else None,
            outcome.results_dir,
            outcome.exit_code,
            outcome.baseline,
            outcome.checks if judged else [],
            [] if judged else [c.check for c in outcome.checks],
            outcome.summary,
        )

    @classmethod
    def error(cls, stack: str, message: str, checks: Sequence[str]) -> Report:
        return cls(stack, Verdict.ERROR, message, unjudged=list(checks))

    @property
    def suite(self) -> str:
        return f"{self.stack}/{self.run_id}" if self.run_id else self.stack


def _state(c: CheckResult) -> str:
    return "pass" if c.ok else "error" if c.ambiguous else "fail"


def _run_state(r: Report) -> str:
    if r.verdict in (Verdict.ERROR, Verdict.INTERRUPTED):
        return "error"
    return "fail" if r.locust_exit else "pass"


def _run_says(r: Report) -> str:
    if _run_state(r) == "error":
        return r.why
    return f"Locust exited {r.locust_exit}" + (f": {r.why}" if r.locust_exit else "")


def junit_xml(r: Report) -> bytes:
    import xml.etree.ElementTree as ET  # only for --junit: not on every command's import

    cls = f"swarm.{r.stack}"
    cases: list[tuple[str, str, str]] = [(c.check, _state(c), c.says) for c in r.checks]
    cases += [(text, "skipped", f"not judged: {r.why}") for text in r.unjudged]
    cases.append((RUN_CASE, _run_state(r), _run_says(r)))
    count = {s: sum(1 for _, st, _ in cases if st == s) for s in ("fail", "error", "skipped")}
    root = ET.Element("testsuites", name="swarm")
    suite = ET.SubElement(
        root,
        "testsuite",
        name=r.suite,
        tests=str(len(cases)),
        failures=str(count["fail"]),
        errors=str(count["error"]),
        skipped=str(count["skipped"]),
    )
    props = ET.SubElement(suite, "properties")
    for k, v in (("verdict", str(r.verdict)), ("results", r.results_dir), ("baseline", r.baseline)):
        if v is not None:
            ET.SubElement(props, "property", name=k, value=str(v))
    for name, state, says in cases:
        case = ET.SubElement(suite, "testcase", classname=cls, name=name)
        tag = {"fail": "failure", "error": "error", "skipped": "skipped"}.get(state)
        if tag:
            el = ET.SubElement(case, tag, message=f"{name}: {says}", type=state)
            el.text = f"{name}: {says}"
        elif says:
            ET.SubElement(case, "system-out").text = says
    for attr in ("tests", "failures", "errors", "skipped"):
        root.set(attr, suite.get(attr, "0"))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(r: Report) -> str:
    head = f"### swarm run `{r.suite}`: {MARK.get(str(r.verdict), str(r.verdict))}"
    lines = [head, ""]
    if r.why:
        lines += [_cell(r.why), ""]
    if r.baseline:
        lines += [f"Baseline: `{r.baseline}`", ""]
    rows = [(c.check, _state(c), c.says) for c in r.checks]
    rows += [(text, "skipped", "") for text in r.unjudged]
    rows.append((RUN_CASE, _run_state(r), _run_says(r)))
    lines += ["| check | result | measured |", "| --- | --- | --- |"]
    lines += [f"| `{_cell(n)}` | {MARK[s]} | {_cell(says)} |" for n, s, says in rows]
    if r.summary is not None:
        heads, body = summary_rows(r.summary)
        lines += ["", "| " + " | ".join(heads) + " |", "|" + " --- |" * len(heads)]
        lines += ["| " + " | ".join(_cell(x) for x in row) + " |" for row in body]
    if r.results_dir is not None:
        lines += ["", f"Results: `{r.results_dir}`"]
    return "\n".join(lines) + "\n\n"


def write(r: Report, junit: Path | None, step_summary: str | None) -> list[str]:
    """Write what was asked; returns warnings (a step summary that cannot be appended to
    is one). Raises SwarmError when the --junit file cannot be written."""
    warnings = []
    if step_summary:
        try:
            with open(step_summary, "a", encoding="utf-8") as f:
                f.write(markdown(r))
        except OSError as e:
            warnings.append(f"cannot append to $GITHUB_STEP_SUMMARY ({step_summary}): {e}")
    if junit is not None:
        try:
            junit.parent.mkdir(parents=True, exist_ok=True)
            junit.write_bytes(junit_xml(r))
        except OSError as e:
            raise SwarmError(f"cannot write --junit {junit}: {e.strerror or e}") from e
    return warnings
