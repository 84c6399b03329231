"""swarm for scripts and pytest: `swarm.Stack`, the commands as methods.

    with swarm.Stack("swarm.toml") as s:
        s.up_master()
        s.scale_workers(2)
        result = s.run(host="http://127.0.0.1:8080", locustfile="viral_load.py", users=10,
                       run_time="30s", checks=["p95<200ms"])
        assert result.passed

The CLI's up / run / killall / down are this class plus rendering. Nothing here prints or
exits: errors are SwarmError subclasses, progress goes to the Reporter given (none shown by
default), and a run whose checks fail returns its RunResult (verdict FAIL) for the caller
to judge, as the CLI turns it into exit 1.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from swarm import config
from swarm.errors import SwarmError, UsageError
from swarm.locust.stats import EndpointStats, Summary
from swarm.models import HostResult, Role
from swarm.pipeline import fleet
from swarm.pipeline.judge import CheckResult, Judgement, Unmeasured, Verdict, row_of
from swarm.pipeline.plan import RunOptions
from swarm.pipeline.run import RunOutcome
from swarm.pipeline.run import killall as kill_everywhere
from swarm.pipeline.run import run as start_run
from swarm.pipeline.session import Reporter, Session

ConfigSource = str | os.PathLike[str] | Mapping[str, Any] | config.Config | None


@dataclass(frozen=True)
class RunResult:
    """One run, in the pipeline's own records (run.json in results_dir holds the same)."""

    run_id: str | None  # what `swarm results` and --baseline RUN name it by; None: UI mode
    results_dir: Path | None
    summary: Summary | None  # Locust's figures; None for a UI-mode run (still going)
    stats: tuple[EndpointStats, ...]  # one per stats entry (method, name), Aggregated apart
    checks: tuple[CheckResult, ...]
    judgement: Judgement
    outcome: RunOutcome  # the rest: workers seen, saturation, failures, raised, baseline

    @classmethod
    def of(cls, outcome: RunOutcome) -> RunResult:
        out = outcome.results_dir
        return cls(
            run_id=out.name if out else None,
            results_dir=out,
            summary=outcome.summary,
            stats=tuple(outcome.summary.endpoints) if outcome.summary else (),
            checks=tuple(outcome.checks),
            judgement=outcome.judgement,
            outcome=outcome,
        )

    @property
    def verdict(self) -> Verdict:
        return self.judgement.verdict

    @property
    def passed(self) -> bool:
        return self.judgement.verdict == Verdict.PASS

    def stat(self, name: str | None = None) -> EndpointStats:
        """The entry a check's [NAME] reads: `WS rtt`, `GET /items`; None: Aggregated."""
        if self.summary is None:
            raise UsageError("a UI-mode run has no statistics: run headless")
        try:
            return row_of(self.summary, name)
        except Unmeasured as e:
            raise UsageError(str(e)) from None


def bootstrap_failure(result: fleet.UpResult) -> SwarmError | None:
    """What `up` raises when bootstrap failed somewhere (the CLI shows the table first)."""
    if not result.failed:
        return None
    # The reason in the error line itself: the table may be long. One reason for all
    # (bootstrap's own), else the first node's error.
    first = result.failed[0]
    why = result.reason or (first.error.splitlines()[0] if first.error else "")
    if not result.reason and not why.startswith(first.node.name):
        why = f"{first.node.name}: {why or 'see the table above'}"
    more = f"; +{len(result.failed) - 1} more above" if len(result.failed) > 1 else ""
    why = f": {why}" if result.reason else f" ({why}{more})"
    return SwarmError(
        f"bootstrap failed on {len(result.failed)} of {len(result.bootstrap)} "
        f"node(s){why}; they stay in `swarm status`: fix and run `swarm up` again, "
        "or remove them with `swarm down`"
    )


def _config_of(source: ConfigSource, stack: str | None) -> config.Config:
    if isinstance(source, config.Config):
        return config.named(source, stack) if stack else source
    if isinstance(source, Mapping):
        return config.named(config.parse_data(source, None, Path.cwd()), stack)
    return config.load(source, stack)


class Stack:
    """A stack as swarm.toml (a path, None for ./swarm.toml, or the same tables as a dict)
    describes it; the environment (AWS_*, SWARM_STACK, SWARM_STATE_DIR) is read as the CLI
    reads it. `with Stack(...) as s:` runs down() on the way out, whatever happened."""

    def __init__(
        self,
        source: ConfigSource = None,
        *,
        stack: str | None = None,
        reporter: Reporter | None = None,
    ):
        self.config = _config_of(source, stack)  # bad config raises here, before any launch
        self._reporter = reporter
        self._session: Session | None = None

    @property
    def name(self) -> str:
        return self.config.stack.name

    @property
    def session(self) -> Session:
        """Opened on first use: the provider (boto3 on ec2) is set up only when needed."""
        if self._session is None:
            self._session = Session.open(self.config, self._reporter)
        return self._session

    def up_master(self, *, strict: bool = True) -> fleet.UpResult:
        """Launch and bootstrap the master. strict: raise when bootstrap failed on it."""
        return self._checked(fleet.up_master(self.session), strict)

    def scale_workers(self, n: int, *, strict: bool = True) -> fleet.UpResult:
        """Make the stack have exactly n workers (launch or remove)."""
        wanted = fleet.check_count(n)  # before the session: bad input touches nothing
        return self._checked(fleet.scale_workers(self.session, wanted), strict)

    @staticmethod
    def _checked(result: fleet.UpResult, strict: bool) -> fleet.UpResult:
        failure = bootstrap_failure(result) if strict else None
        if failure is not None:
            raise failure
        return result

    def run(
        self,
        host: str,
        locustfile: str,
        *,
        users: int | None = None,
        spawn_rate: float | None = None,
        run_time: str | None = None,
        checks: Iterable[str] = (),
        headless: bool = True,
        profile: str | None = None,
        extra_args: Iterable[str] = (),
        require_all: bool = False,
        baseline: str | None = None,
        baseline_anyway: bool = False,
        results_root: str | os.PathLike[str] = "results",
    ) -> RunResult:
        """Start Locust on every node; headless: wait, fetch, judge, record. A run that fails
        its checks returns (verdict FAIL); one that breaks (Locust, a node) raises."""
        opts = RunOptions(
            host=host,
            locustfile=locustfile,
            users=users,
            spawn_rate=spawn_rate,
            run_time=run_time,
            headless=headless,
            profile=profile,
            checks=tuple(checks),
            extra_args=tuple(extra_args),
            require_all=require_all,
            baseline=baseline,
            baseline_anyway=baseline_anyway,
        )
        return RunResult.of(start_run(self.session, opts, Path(results_root)))

    def killall(self) -> list[HostResult]:
        """Stop Locust everywhere; keep the machines. Each node's value: whether a test ran."""
        return kill_everywhere(self.session)

    def down(self, *, workers_only: bool = False) -> fleet.DownResult:
        """Terminate everything this stack created in its region (or only its workers)."""
        return fleet.down(self.session, Role.WORKER if workers_only else None)

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()  # a failure here is raised, chained to the body's own
