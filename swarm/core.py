"""The order of steps: launch, wait, bootstrap, reconcile, tear down.

Providers and runners never call each other; this module does, and reports progress through
a Reporter so that only cli.py renders anything.
"""
from __future__ import annotations

import importlib
import shlex
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


from swarm import locust as L
from swarm.errors import ProviderError, RemoteError, SwarmError, UsageError
from swarm.models import MASTER, WORKER, HostResult, Node, name_nodes, order_key
from swarm.providers import Provider, Stack, get_provider
from swarm.remote import fan_out, replace_tree_cmd, tar_bytes

MAX_WORKERS = 500


def locust_version() -> str:
    """This machine's Locust version, without importing Locust (0.3 s and a gevent
    monkey-patch on every command)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("locust")
    except PackageNotFoundError:   # pragma: no cover - an unusual install
        import locust
        return locust.__version__

READY_TIMEOUT = 600       # seconds for the provider to say "running"
BOOTSTRAP_TIMEOUT = 1200
UPLOAD_FAILED = 96      # exit code of the bootstrap exec when unpacking failed, not the script


class Reporter(Protocol):
    def info(self, msg: str) -> None: ...
    def warn(self, msg: str) -> None: ...


class Silent:
    def info(self, msg: str) -> None:
        pass

    def warn(self, msg: str) -> None:
        pass


@dataclass
class Session:
    """A stack and its provider, plus the reporter for this command."""
    stack: Stack
    provider: Provider
    report: Reporter = field(default_factory=Silent)

    @classmethod
    def open(cls, config, report: Reporter | None = None) -> "Session":
        stack = Stack.from_config(config)
        provider = get_provider(stack)
        if getattr(provider, "can_ssh", False):
            # paramiko takes ~0.2 s to import; start now so it overlaps the cloud API calls
            # instead of holding up every host's thread of the first fan-out.
            threading.Thread(target=importlib.import_module, args=("swarm.ssh",), daemon=True,
                             name="import-ssh").start()
        return cls(stack, provider, report or Silent())

    def nodes(self, role: str | None = None) -> list[Node]:
        named = name_nodes(self.provider.list_nodes(self.stack))
        return [n for n in named if role is None or n.role == role]

    def flush_notices(self) -> None:
        for msg in getattr(self.provider, "notices", [])[:]:
            self.report.warn(msg)
        if hasattr(self.provider, "notices"):
            self.provider.notices.clear()


@dataclass
class UpResult:
    created: list[Node] = field(default_factory=list)
    removed: list[Node] = field(default_factory=list)
    bootstrap: list[HostResult] = field(default_factory=list)
    nothing_to_do: str = ""

    @property
    def failed(self) -> list[HostResult]:
        return [r for r in self.bootstrap if not r.ok]


def check_count(n: int) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise UsageError(f"-n must be a whole number of at least 1, got {n!r} "
                         "(use `swarm down workers` to remove all workers)")
    if n > MAX_WORKERS:
        raise UsageError(f"-n {n} is more than swarm's limit of {MAX_WORKERS} workers per stack")
    return n


def check_bootstrap_dir(sess: Session) -> Path:
    cfg = sess.stack.config
    bdir = cfg.resolve(cfg.bootstrap.dir)
    script = bdir / cfg.bootstrap.script
    if sess.provider.runs_bootstrap and not script.is_file():
        raise UsageError(f"bootstrap script {script} not found: set [bootstrap] dir and script "
                         "in swarm.toml")
    return bdir


def up_master(sess: Session) -> UpResult:
    check_bootstrap_dir(sess)
    nodes = sess.nodes()      # one listing per step: on EC2 each is an API call
    existing = [n for n in nodes if n.role == MASTER]
    if existing:
        m = existing[0]
        return UpResult(nothing_to_do=f"stack {sess.stack.name!r} already has a master "
                                      f"({m.id}, {m.state}); nothing to do")
    return _bootstrap_new(sess, UpResult(created=_launch(sess, MASTER, 1, nodes)))


def scale_workers(sess: Session, n: int) -> UpResult:
    check_count(n)
    check_bootstrap_dir(sess)
    nodes = sess.nodes()
    if not any(x.role == MASTER for x in nodes):
        raise UsageError(f"stack {sess.stack.name!r} has no master: run `swarm up master` first")
    workers = [x for x in nodes if x.role == WORKER]
    if len(workers) == n:
        return UpResult(nothing_to_do=f"stack {sess.stack.name!r} already has {n} workers; "
                                      "nothing to do")
    if len(workers) > n:
        extras = newest(workers, len(workers) - n)
        sess.report.info(f"removing {len(extras)} worker(s): {', '.join(w.name for w in extras)}")
        sess.provider.terminate_nodes(sess.stack, extras)
        return UpResult(removed=extras)
    result = _bootstrap_new(sess, UpResult(created=_launch(sess, WORKER, n - len(workers), nodes)))
    # Two `up workers -n N` at once both launch: re-check and drop the newest extras. Both
    # callers pick the same nodes (same order), so the stack converges on N. (After the
    # bootstrap: earlier, a caller still waiting for its instances could see them terminated.)
    workers = sess.nodes(WORKER)
    # The other caller may already have removed some of ours (they were the newest): they are
    # gone, not failed; their (failed) bootstrap is not this command's failure.
    alive = {w.id for w in workers}
    taken = [c for c in result.created if c.id not in alive]
    if taken:
        sess.report.warn(f"another `swarm up` raced this one and removed {len(taken)} of the "
                         "worker(s) it launched")
        result.created = [c for c in result.created if c.id in alive]
        result.bootstrap = [r for r in result.bootstrap if r.node.id in alive]
    if len(workers) > n:
        extras = newest(workers, len(workers) - n)
        sess.report.warn(f"another `swarm up` raced this one: removing {len(extras)} extra worker(s)")
        sess.provider.terminate_nodes(sess.stack, extras)
        gone = {e.id for e in extras}
        result.removed = extras
        result.created = [c for c in result.created if c.id not in gone]
        result.bootstrap = [r for r in result.bootstrap if r.node.id not in gone]
    return result


def _bootstrap_new(sess: Session, result: UpResult) -> UpResult:
    if sess.provider.runs_bootstrap:
        result.bootstrap = bootstrap(sess, result.created)
    else:
        sess.report.info(f"{sess.stack.provider} provider: bootstrap.sh is not run here (it "
                         "installs system packages); using this machine's Locust "
                         f"{locust_version()}")
    return result


def newest(nodes: list[Node], k: int) -> list[Node]:
    return sorted(nodes, key=order_key)[-k:] if k > 0 else []


def cost_estimate(sess: Session, role: str, count: int,
                  nodes: list[Node] | None = None) -> str | None:
    """'estimated cost: $0.51/h for the stack (1 master + 5 workers, on-demand)' on ec2."""
    if sess.stack.provider != "ec2":
        return None
    from swarm import cost
    cfg = sess.stack.config.ec2
    lifecycle = "spot" if cfg.spot else "on-demand"
    nodes = sess.nodes() if nodes is None else nodes
    masters = sum(n.role == MASTER for n in nodes) + (count if role == MASTER else 0)
    workers = sum(n.role == WORKER for n in nodes) + (count if role == WORKER else 0)
    items = [(cfg.master_type, lifecycle, masters), (cfg.worker_type, lifecycle, workers)]
    total, prices = cost.estimate_hourly(cost.PriceBook(sess.provider), items)
    why = "; ".join(sorted({p.source for p in prices if p.usd_per_hour is None}))
    return (f"estimated cost: {cost.format_rate(total)} for the stack ({masters} master + "
            f"{workers} workers, {lifecycle})" + (f" ({why})" if why else ""))


def price_book(sess: Session):
    if sess.stack.provider != "ec2":
        return None
    from swarm import cost
    return cost.PriceBook(sess.provider)


def cost_so_far(sess: Session, nodes: list[Node], book=None) -> dict | None:
    """What the nodes cost so far (running time × current price) and the time to the TTL."""
    if sess.stack.provider != "ec2" or not nodes:
        return None
    from swarm import cost
    total, _ = cost.spend(book or cost.PriceBook(sess.provider), nodes)
    ttl = cost.time_to_ttl(nodes)
    ttl_text = "unknown" if ttl is None else f"{int(ttl // 3600)}h{int(ttl % 3600 // 60):02d}m"
    return {"spent_usd": None if total is None else round(total, 4), "ttl_s": ttl,
            "spent": cost.format_usd(total),
            "text": f"spent so far: {cost.format_usd(total)}; TTL in {ttl_text}"}


def _launch(sess: Session, role: str, count: int, existing: list[Node]) -> list[Node]:
    """Launch count nodes and wait until the provider says they run. -> the new nodes, named.
    `existing`: the stack's listing this command has just taken."""
    p, stack = sess.provider, sess.stack
    check = getattr(p, "check_launch", None)
    if check is not None:       # a bad AMI / instance type is refused before anything is created
        check(stack, role, count)
    note = cost_estimate(sess, role, count, existing)
    if note:
        sess.report.info(note)    # before anything is launched
    p.prepare(stack)
    sess.flush_notices()
    sess.report.info(f"launching {count} {role}{'s' if count > 1 else ''} on {stack.provider}")
    nodes = p.create_nodes(stack, role, count)
    sess.flush_notices()
    try:
        ready = p.wait_ready(stack, nodes, READY_TIMEOUT)
    except Exception as e:
        # Nothing half-made survives: terminate what this call launched, then report.
        try:
            p.terminate_nodes(stack, nodes)
        except Exception as cleanup_error:  # keep the first error; say what may be left
            raise ProviderError(f"{e}; and terminating the {len(nodes)} new node(s) failed too "
                                f"({cleanup_error}): run `swarm down`") from e
        if isinstance(e, SwarmError):
            raise
        raise ProviderError(f"waiting for the new {role}(s) failed: {e}") from e
    ids = {n.id for n in ready}
    return [n for n in sess.nodes(role) if n.id in ids] or ready


def bootstrap(sess: Session, nodes: list[Node]) -> list[HostResult]:
    """Upload bootstrap/ (one tar stream) and run its script on every node at once."""
    cfg = sess.stack.config
    bdir = check_bootstrap_dir(sess)
    rd = cfg.bootstrap.remote_dir
    env = {"SWARM_LOCUST_VERSION": locust_version(), "SWARM_STACK": sess.stack.name}
    script = shlex.quote(f"bootstrap/{cfg.bootstrap.script}")
    payload = tar_bytes(bdir)     # once: one tar per host was N x the CPU and memory

    def one(node: Node) -> str:
        r = sess.provider.runner(sess.stack, node)
        try:
            r.wait_ready(cfg.bootstrap.ssh_timeout)
            exports = " ".join(f"{k}={shlex.quote(v)}"
                               for k, v in {**env, "SWARM_ROLE": node.role}.items())
            # One exec: unpack, then run the script. $PWD: rd may be relative to the login dir,
            # and the script runs inside it.
            res = r.run(f"{replace_tree_cmd(f'{rd}/bootstrap')} || exit {UPLOAD_FAILED}; "
                        f"cd {shlex.quote(rd)} && {exports} SWARM_REMOTE_DIR=\"$PWD\" "
                        f"bash {script} >bootstrap.log 2>&1",
                        timeout=BOOTSTRAP_TIMEOUT, check=False, stdin=payload)
            if res.exit_code == UPLOAD_FAILED:
                raise RemoteError(f"unpacking bootstrap/ in {rd} failed: "
                                  f"{res.stderr.strip().splitlines()[-1:] or 'no output'}")
            if not res.ok:
                tail = r.run(f"tail -n 15 {shlex.quote(rd)}/bootstrap.log", timeout=30, check=False)
                lines = tail.stdout.strip().replace("\n", "\n    ")
                raise RemoteError(f"bootstrap failed (exit {res.exit_code}); last lines of "
                                  f"{rd}/bootstrap.log:\n    {lines}")
            # (Re)start the host's warm Locust, which imports Locust for the next `run`, once
            # swarm has exited (closing the runner is not the signal): where hosts share CPUs
            # (VMs on one machine, the lab), 30 imports would slow by seconds the bootstraps,
            # API calls and exit still to come.
            try:
                r.run_after_exit(L.warm_restart_cmd(rd))
            except RemoteError:
                pass     # only a head start: `run` starts Locust cold and a warm one then
            return "bootstrapped"
        finally:
            r.close()

    sess.report.info(f"bootstrapping {len(nodes)} node(s)")
    return fan_out(nodes, one, what="bootstrap", raise_on_error=False)


@dataclass
class DownResult:
    removed: list[Node] = field(default_factory=list)
    nothing_to_do: str = ""


def down(sess: Session, role: str | None = None) -> DownResult:
    nodes = sess.nodes(role)
    if not nodes:
        if role is None:
            sess.provider.cleanup(sess.stack)
            sess.flush_notices()
        what = f"{role}s" if role else "nodes"
        return DownResult(nothing_to_do=f"stack {sess.stack.name!r} has no {what}; nothing to do")
    spent = cost_so_far(sess, nodes)    # priced while the nodes still exist
    sess.report.info(f"terminating {len(nodes)} node(s) of stack {sess.stack.name!r}")
    sess.provider.terminate_nodes(sess.stack, nodes)
    if spent:
        sess.report.info(f"these nodes cost about {spent['spent']} (running time × current price)")
    if role is None:
        sess.provider.cleanup(sess.stack)
    sess.flush_notices()
    return DownResult(removed=nodes)
