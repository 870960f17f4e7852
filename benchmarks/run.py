"""collab's benchmark: a real server process, real WebSockets, clients in separate processes.

    .venv/bin/python benchmarks/run.py                 # quick: every scenario, 1-2 minutes
    .venv/bin/python benchmarks/run.py --full          # the full sizes of docs/benchmarks.md
    .venv/bin/python benchmarks/run.py --vs-sharedb    # also run the hot document on ShareDB
    .venv/bin/python benchmarks/run.py --scenario hot  # one scenario (repeatable)

Scenarios: ``hot`` (2/20/50 closed-loop clients on one document), ``crowd`` (hundreds of
typists on one document), ``many`` (many documents with two typists each), ``connections``
(memory per idle connection), ``history`` (``GET …/content?rev=R`` on a 100,000-op document),
``yjs`` (y-websocket providers typing on one document: updates/s, integration latency, server
CPU per update; Node and the npm packages pinned in tests/yjs_node), ``commit`` (the
durable-commit bound of SQLite on this disk), and ``abuse`` (issue 17's attacks on a server with
its default limits, beside a typist and a ``/healthz`` poller whose latency they must not
disturb). Each collab scenario starts a
fresh ``collab serve`` on a temporary SQLite database; the load comes from ``driver.py``
processes. Everything talks to 127.0.0.1 only, and every phase has a time limit.

Output: a Markdown table on stdout, the raw results in ``benchmarks/results/`` and the plots
``docs/img/bench-latency.png`` and ``docs/img/bench-vs-sharedb.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import os
import queue
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from driver import TARGET_LENGTH, Histogram  # noqa: E402

from collab import ot  # noqa: E402
from collab.auth import mint_token  # noqa: E402

BIN = Path(sys.executable).parent
COLLAB = BIN / "collab"
SECRET = "bench-secret-for-this-run-only-0123456789abcdef"
SHAREDB_DIR = BENCH / "sharedb"
RESULTS_DIR = BENCH / "results"
IMG_DIR = ROOT / "docs" / "img"
SCENARIOS = (
    "commit", "hot", "crowd", "many", "cluster", "connections", "history", "yjs", "abuse",
)
# The cluster scenario needs these (the machines' PostgreSQL and Redis by default).
BENCH_POSTGRES_URL = os.environ.get(
    "COLLAB_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
BENCH_REDIS_URL = os.environ.get("COLLAB_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# Limits raised so the load measures the server, not its per-client throttles.
UNTHROTTLED = {
    "COLLAB_OPS_PER_SECOND": "1000000",
    "COLLAB_OPS_BURST": "1000000",
    "COLLAB_PRESENCE_PER_SECOND": "1000000",
    "COLLAB_PRESENCE_BURST": "1000000",
    "COLLAB_USER_OPS_PER_SECOND": "1000000",
    "COLLAB_USER_OPS_BURST": "1000000",
    "COLLAB_MAX_CONNECTIONS_PER_USER": "1000000",
    "COLLAB_MAX_CONNECTIONS_PER_ADDRESS": "1000000",
    "COLLAB_SEND_QUEUE_LIMIT": "1000000",
    "COLLAB_INBOX_SIZE": "65536",
    "COLLAB_DOC_IDLE_SECONDS": "600",
}
# COLLAB_BENCH_PROFILE_GIL=1: py-spy samples only the thread holding the GIL (CPU, not waits).
PROFILE_GIL = os.environ.get("COLLAB_BENCH_PROFILE_GIL") == "1"
# COLLAB_BENCH_PROFILE_NATIVE=1: py-spy also samples C and Cython frames; it must pause the server
# for each sample then, which slows it: compare shares, not rates.
PROFILE_NATIVE = os.environ.get("COLLAB_BENCH_PROFILE_NATIVE") == "1"
PROFILE_FORMATS = {".json": ["--format", "speedscope"], ".txt": ["--format", "raw"]}
# The crowd document starts with this text, so its light typists can replace inside it (see
# driver.LightClient); its length is the full clients' TARGET_LENGTH, so they replace too.
CROWD_SEED = ("The quick brown fox jumps over the lazy dog. " * 50)[:TARGET_LENGTH]
# Full clients (OT, text kept, every op measured) per driver process in the crowd scenario.
CROWD_FULL_CLIENTS = 2
# The first text of the durable pair's documents: sharedb-postgres 5.0.1 stores an empty text
# snapshot as null, which ShareDB then refuses on the first op.
HOT_SEED = "Durable against durable. "
STARTUP_TIMEOUT = 60.0
PHASE_TIMEOUT = 120.0


@dataclass(frozen=True)
class Sizes:
    hot_clients: tuple[int, ...]
    warmup: float
    duration: float
    crowd_clients: int
    rate: float
    many_docs: int
    connections: int
    history_ops: int
    history_requests: int
    commit_loops: int
    yjs_clients: int = 10
    yjs_rate: float = 10.0
    abuse_revisions: int = 10_000
    abuse_duration: float = 10.0


QUICK = Sizes(
    hot_clients=(2, 20, 50), warmup=1.0, duration=5.0, crowd_clients=100, rate=5.0,
    many_docs=100, connections=500, history_ops=100_000, history_requests=300, commit_loops=2000,
)
FULL = Sizes(
    hot_clients=(2, 20, 50), warmup=2.0, duration=15.0, crowd_clients=400, rate=5.0,
    many_docs=500, connections=2000, history_ops=100_000, history_requests=2000,
    commit_loops=5000, yjs_clients=30, abuse_revisions=20_000, abuse_duration=30.0,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- servers ---------------------------------------------------------------------------------


class Sampler(threading.Thread):
    """Samples a process's resident memory ten times a second; keeps the peak."""

    def __init__(self, process: psutil.Process) -> None:
        super().__init__(daemon=True)
        self.process = process
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            self._stop_event.wait(0.1)

    def stop(self) -> int:
        self._stop_event.set()
        self.join(2)
        return self.peak


class Server:
    """A server process under test: ``collab serve`` or ShareDB's ``server.js``."""

    def __init__(
        self, kind: str, workdir: Path, docs: list[str], env: dict[str, str],
        sharedb_args: Sequence[str] = (),
    ) -> None:
        self.kind = kind
        self.sharedb_args = list(sharedb_args)
        self.port = free_port()
        self.workdir = workdir
        self.docs = docs
        self.env = env
        self.log_path = workdir / f"{kind}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None
        self.sampler: Sampler | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        log_file = self.log_path.open("ab")
        if self.kind == "collab":
            self.process = subprocess.Popen(
                [str(COLLAB), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--log-level", "warning"],
                env={**os.environ, **self.env}, stdout=log_file, stderr=subprocess.STDOUT,
                cwd=str(self.workdir),
            )
            self._wait_http()
        else:
            self.process = subprocess.Popen(
                ["node", str(SHAREDB_DIR / "server.js"), str(self.port), *self.sharedb_args,
                 *self.docs],
                stdout=subprocess.PIPE, stderr=log_file, cwd=str(SHAREDB_DIR),
            )
            assert self.process.stdout is not None
            line = self.process.stdout.readline().decode()
            if not line.startswith("ready"):
                raise RuntimeError(f"sharedb server did not start: {self.log_path.read_text()}")
        self.ps = psutil.Process(self.process.pid)
        self.sampler = Sampler(self.ps)
        self.sampler.start()

    def _wait_http(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"collab exited: {self.log_path.read_text()[-3000:]}")
            try:
                status, _ = http_get(self.port, "/healthz")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)  # polling a starting process
        raise RuntimeError("collab did not become healthy")

    def cpu(self) -> float:
        assert self.ps is not None
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def thread_cpu(self) -> dict[int, float]:
        assert self.ps is not None
        return {t.id: t.user_time + t.system_time for t in self.ps.threads()}

    def rss(self) -> int:
        assert self.ps is not None
        return int(self.ps.memory_info().rss)

    def stop(self) -> int:
        """Stops the server; returns its peak resident memory in bytes."""
        peak = self.sampler.stop() if self.sampler is not None else 0
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
        return peak

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def http_post(port: int, path: str, body: dict[str, Any], token: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=orjson.dumps(body), headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def http_get(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# -- drivers ---------------------------------------------------------------------------------


class DriverProcess:
    def __init__(self, config: dict[str, Any], log_path: Path) -> None:
        self.log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, str(BENCH / "driver.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, cwd=str(BENCH),
            env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{BENCH}"},
        )
        self.ps = psutil.Process(self.process.pid)
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.send(config)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.events.put(orjson.loads(line))
        self.events.put(None)

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(orjson.dumps(message) + b"\n")
        self.process.stdin.flush()

    def expect(self, event: str, timeout: float = PHASE_TIMEOUT) -> dict[str, Any]:
        try:
            message = self.events.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"driver {self.process.pid}: no {event!r} in {timeout}s") from None
        if message is None or message.get("event") != event:
            raise RuntimeError(f"driver {self.process.pid}: wanted {event!r}, got {message!r}")
        return message

    def finish(self) -> None:
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.log.close()


@dataclass
class LoadResult:
    clients: int
    duration: float
    light: int = 0  # clients that kept no text (driver.LightClient)
    peer_sample: int = 1  # light clients measured peer latency on one frame in this many
    typed: int = 0
    acks: int = 0
    deliveries: int = 0
    messages: int = 0
    errors: int = 0
    failures: list[str] = field(default_factory=list)
    behind: int = 0
    converged: bool = True
    server_cpu: float = 0.0
    db_cpu: float = 0.0  # PostgreSQL's processes, as a share of one core (PostgreSQL runs only)
    server_threads: list[float] = field(default_factory=list)
    driver_cpu: float = 0.0
    peak_rss: int = 0
    ack: dict[str, float | None] = field(default_factory=dict)
    peer: dict[str, float | None] = field(default_factory=dict)
    # With light clients: peer latency as the full clients saw it, and as the light ones sampled.
    peer_full: dict[str, float | None] = field(default_factory=dict)
    peer_light: dict[str, float | None] = field(default_factory=dict)

    @property
    def ops_per_second(self) -> float:
        return self.acks / self.duration

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data["ops_per_second"] = self.ops_per_second
        data["typed_per_second"] = self.typed / self.duration
        data["deliveries_per_second"] = (self.deliveries + self.acks) / self.duration
        data["messages_per_second"] = self.messages / self.duration
        # Server CPU per op sequenced: an efficiency figure that a busy machine disturbs less
        # than throughput or latency do.
        data["server_cpu_us_per_op"] = (
            self.server_cpu * self.duration / self.acks * 1e6 if self.acks else None
        )
        data["db_cpu_us_per_op"] = (
            self.db_cpu * self.duration / self.acks * 1e6 if self.acks and self.db_cpu else None
        )
        return data


def colocated(clients: list[tuple[str, str]], docs: int) -> list[tuple[str, str]]:
    """``clients`` reordered so that ``run_load`` puts both authors of the first half of the
    documents on one server and those of the second half on the other (driver i talks to
    server i mod 2): what two processes cost when no op has a peer on the other one."""
    if docs % 2:
        raise SystemExit("--colocate needs an even number of documents")

    def number(client: tuple[str, str]) -> int:
        return int(client[0].rsplit("-", 1)[1])

    first = [client for client in clients if number(client) < docs // 2]
    second = [client for client in clients if number(client) >= docs // 2]
    return [client for pair in zip(first, second, strict=True) for client in pair]


def postgres_cpu() -> float:
    """User+system seconds of every PostgreSQL process on this machine (the server under test
    runs on the machine's own PostgreSQL; anything else using it is counted too)."""
    total = 0.0
    for process in psutil.process_iter(["name"]):
        if process.info["name"] in ("postgres", "postmaster"):
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
    return total


def percentiles(hist: Histogram) -> dict[str, float | None]:
    return {f"p{p}": _ms(hist.percentile(p)) for p in (50, 95, 99)} | {"count": hist.total}


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


def run_load(
    server: Server,
    protocol: str,
    clients: list[tuple[str, str]],
    mode: str,
    sizes: Sizes,
    workdir: Path,
    procs: int,
    rate: float = 5.0,
    profile: Path | None = None,
    also: Sequence[Server] = (),
    full_clients: int | None = None,
    seed_length: int = 0,
    database_cpu: bool = False,
) -> LoadResult:
    """Runs ``clients`` (doc, src) from ``procs`` driver processes against ``server``.

    With ``profile``, py-spy samples the server during the measured window into that file.
    With ``full_clients``, only that many clients per driver process are full editors, the rest
    light typists replacing inside the first ``seed_length`` characters (``driver.LightClient``).
    With ``also``, driver process i talks to server i mod n: neighbouring clients (the two of a
    document in the many-documents load) land on different server processes.
    """
    token = mint_token(SECRET, "bench", name="Bench", ttl=24 * 3600)
    servers = [server, *also]
    procs = max(1, min(procs, len(clients)))
    drivers = []
    for index in range(procs):
        mine = clients[index::procs]
        target = servers[index % len(servers)]
        url = target.ws_url if protocol == "collab" else target.ws_url + "/"
        config = {
            "protocol": protocol, "url": url, "token": token, "clients": mine, "mode": mode,
            "rate": rate, "seed": index + 1,
        }
        if full_clients is not None:
            config |= {"full_clients": full_clients, "seed_length": seed_length}
        drivers.append(DriverProcess(config, workdir / "drivers.log"))
    try:
        for driver in drivers:
            ready = driver.expect("ready", timeout=STARTUP_TIMEOUT + len(clients) / 20)
            if ready["failed"]:
                raise RuntimeError(f"{ready['failed']} clients could not connect")
        start = time.monotonic() + 0.3
        measure = start + sizes.warmup
        end = measure + sizes.duration
        for driver in drivers:
            driver.send({"cmd": "go", "start": start, "measure": measure, "end": end})
        time.sleep(max(0.0, measure - time.monotonic()))  # the run is timed by the clock
        cpu_before = sum(s.cpu() for s in servers)
        db_before = postgres_cpu() if database_cpu else 0.0
        threads_before = server.thread_cpu()
        spy = None
        if profile is not None and server.process is not None:
            spy = subprocess.Popen(
                [str(BIN / "py-spy"), "record", "--pid", str(server.process.pid), "--output",
                 str(profile), "--duration", str(max(1, int(sizes.duration))), "--rate", "200",
                 # Pausing the server 200 times a second to sample it slowed it several-fold.
                 *(["--native"] if PROFILE_NATIVE else ["--nonblocking"]),
                 *(["--gil"] if PROFILE_GIL else []),
                 *PROFILE_FORMATS.get(profile.suffix, [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        time.sleep(max(0.0, end - time.monotonic()))
        cpu_after = sum(s.cpu() for s in servers)
        db_after = postgres_cpu() if database_cpu else 0.0
        threads_after = server.thread_cpu()
        if spy is not None:
            spy.wait(60)
        revs: dict[str, int] = {}
        for driver in drivers:
            for doc, rev in driver.expect("drained")["revs"].items():
                revs[doc] = max(revs.get(doc, 0), rev)
        for driver in drivers:
            driver.send({"cmd": "verify", "revs": revs})
        result = LoadResult(clients=len(clients), duration=sizes.duration)
        ack, peer, peer_full, peer_light = Histogram(), Histogram(), Histogram(), Histogram()
        hashes: dict[str, set[str]] = {}
        for driver in drivers:
            done = driver.expect("done")
            stats = done["stats"]
            for key in ("typed", "acks", "deliveries", "messages", "errors", "behind"):
                setattr(result, key, getattr(result, key) + stats[key])
            result.failures += stats["failures"]
            result.light += stats["light"]
            result.peer_sample = max(result.peer_sample, stats["peer_sample"])
            result.driver_cpu += stats["cpu_seconds"] / sizes.duration
            ack.merge(Histogram(stats["ack_hist"]))
            peer.merge(Histogram(stats["peer_hist"]))
            peer_full.merge(Histogram(stats["peer_full_hist"]))
            peer_light.merge(Histogram(stats["peer_light_hist"]))
            for doc, values in done["hashes"].items():
                hashes.setdefault(doc, set()).update(values)
        # Clients still behind when the time limit ran out cannot be compared; the others can.
        result.converged = all(len(v) == 1 for v in hashes.values())
        if protocol == "collab" and result.behind == 0:
            result.converged &= server_agrees(server, revs, hashes, token)
        result.server_cpu = (cpu_after - cpu_before) / sizes.duration
        result.db_cpu = (db_after - db_before) / sizes.duration
        # The busiest threads (the event loop, then the database driver's) as core shares.
        result.server_threads = sorted(
            ((threads_after[t] - threads_before.get(t, 0.0)) / sizes.duration
             for t in threads_after),
            reverse=True,
        )[:3]
        result.ack = percentiles(ack)
        result.peer = percentiles(peer)
        if result.light:
            result.peer_full = percentiles(peer_full)
            result.peer_light = percentiles(peer_light)
        return result
    finally:
        for driver in drivers:
            driver.finish()


def server_agrees(
    server: Server, revs: dict[str, int], hashes: dict[str, set[str]], token: str
) -> bool:
    """Checks a sample of documents against the server's own content (REST)."""
    import hashlib

    for doc in sorted(revs)[:20]:
        status, body = http_get(server.port, f"/documents/{doc}", token)
        if status != 200:
            return False
        data = orjson.loads(body)
        digest = hashlib.sha1(data["content"].encode()).hexdigest()
        if data["rev"] != revs[doc] or hashes.get(doc) != {digest}:
            log(f"{doc}: server rev {data['rev']} vs clients {revs[doc]}: texts differ")
            return False
    return True


# -- scenarios -------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = FULL if args.full else QUICK
        if args.duration:
            self.sizes = Sizes(**{**asdict(self.sizes), "duration": args.duration})
        if args.hot_clients:
            self.sizes = Sizes(**{**asdict(self.sizes), "hot_clients": args.hot_clients})
        self.workdir = Path(tempfile.mkdtemp(prefix="collab-bench-"))
        self.extra_env = dict(item.split("=", 1) for item in args.server_env)
        self.results: dict[str, Any] = {
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "mode": "full" if args.full else "quick",
            "sizes": asdict(self.sizes),
            "machine": machine(),
            "server_env": self.extra_env,
            "load_average_before": os.getloadavg(),
        }

    def collab_server(self, name: str, limits: dict[str, str] = UNTHROTTLED) -> Server:
        db = self.workdir / f"{name}.db"
        env = {
            "COLLAB_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
            "COLLAB_JWT_SECRET": SECRET,
            **limits,
            **self.extra_env,
        }
        env = self.traced(env, name)
        subprocess.run([str(COLLAB), "migrate"], env={**os.environ, **env}, check=True,
                       cwd=str(self.workdir), capture_output=True)
        return Server("collab", self.workdir, [], env)

    def traced(self, env: dict[str, str], name: str) -> dict[str, str]:
        """``env`` with the trace of ``benchmarks/trace`` switched on when --trace asks."""
        if not self.args.trace:
            return env
        return {
            **env,
            "COLLAB_BENCH_TRACE": str(self.workdir / f"trace-{name}.json"),
            "PYTHONPATH": os.pathsep.join(
                [str(BENCH / "trace"), *filter(None, [env.get("PYTHONPATH")])]),
        }

    def profile(self, name: str) -> Path | None:
        if not self.args.profile:
            return None
        path = Path(self.args.profile)
        return path.with_name(f"{path.stem}-{name}{path.suffix}")

    def commit(self) -> None:
        """The bound one durable commit per round trip sets (INSERT+COMMIT on WAL, FULL), and
        how near collab's own commit of one op comes to it on the same disk: its statements
        in a bare loop, then through its writer thread, one commit at a time."""
        path = self.workdir / "commit-bound.db"
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE ops (doc TEXT, rev INTEGER, op TEXT, PRIMARY KEY (doc, rev))")
        loops = self.sizes.commit_loops
        began = time.perf_counter()
        for rev in range(loops):
            db.execute("BEGIN")
            db.execute("INSERT INTO ops VALUES ('d', ?, '[12,\"[1234567890]\",{\"d\":12}]')",
                       (rev,))
            db.execute("COMMIT")
        elapsed = time.perf_counter() - began
        db.close()
        statements = bare_commit_seconds(self.workdir / "commit-statements.db", loops)
        writer = writer_commit_seconds(self.workdir / "commit-writer.db", loops)
        self.results["commit"] = {
            "commits_per_second": loops / elapsed,
            "commit_ms": elapsed / loops * 1000,
            "statements_per_second": loops / statements,
            "writer_per_second": loops / writer,
        }
        log(f"commit bound: {loops / elapsed:,.0f} commits/s; collab's commit of one op: "
            f"{loops / statements:,.0f}/s (its statements alone), {loops / writer:,.0f}/s "
            "(through its writer thread)")

    @contextlib.contextmanager
    def postgres_database(self) -> Iterator[str]:
        """A fresh PostgreSQL database for one server (dropped after); its URL."""
        database = asyncio.run(create_database(BENCH_POSTGRES_URL))
        try:
            yield database
        finally:
            asyncio.run(drop_database(BENCH_POSTGRES_URL, database))

    def collab_postgres_server(self, database: str) -> Server:
        env = {"COLLAB_DATABASE_URL": database, "COLLAB_JWT_SECRET": SECRET,
               **UNTHROTTLED, **self.extra_env}
        subprocess.run([str(COLLAB), "migrate"], env={**os.environ, **env}, check=True,
                       cwd=str(self.workdir), capture_output=True)
        return Server("collab", self.workdir, [], env)

    @contextlib.contextmanager
    def server_for(self, kind: str, docs: list[str], seed: str) -> Iterator[Server]:
        """A started server of ``kind`` with ``docs`` created holding ``seed`` (empty: collab
        creates documents on first use, ShareDB at start): ``collab`` (SQLite), ``sharedb``
        (in memory), ``collab-postgres`` and ``sharedb-postgres`` (each on a fresh database of
        the machine's PostgreSQL)."""
        with contextlib.ExitStack() as stack:
            database = (stack.enter_context(self.postgres_database())
                        if kind.endswith("-postgres") else None)
            if kind.startswith("collab"):
                server = (self.collab_server(f"{kind}-{len(docs)}") if database is None
                          else self.collab_postgres_server(database))
                stack.enter_context(server)
                if seed:
                    create_documents(server, docs, seed)
            else:
                args = ["--content", seed]
                if database is not None:
                    args += ["--postgres", database.replace("postgresql+asyncpg://",
                                                            "postgresql://")]
                server = stack.enter_context(
                    Server("sharedb", self.workdir, docs, {}, sharedb_args=args))
            yield server

    def pairs(self) -> list[tuple[str, str]]:
        """The side-by-side pairs --vs-sharedb runs: collab on SQLite against ShareDB in memory,
        collab on PostgreSQL against ShareDB with sharedb-postgres (durable against durable)."""
        pairs = []
        if self.args.pair in ("all", "memory"):
            pairs.append(("collab", "sharedb"))
        if self.args.pair in ("all", "postgres"):
            pairs.append(("collab-postgres", "sharedb-postgres"))
        return pairs

    def hot(self) -> None:
        kinds = ["collab"]
        if self.args.vs_sharedb:
            kinds = [kind for pair in self.pairs() for kind in pair]
        results: dict[str, Any] = {kind: {} for kind in ("collab", "sharedb", *kinds)}
        for n in self.sizes.hot_clients:
            doc = f"hot-{n}"
            clients = [(doc, f"c{n}-{i}") for i in range(n)]
            runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
            for round_ in range(self.args.rounds):
                for kind in kinds:  # alternating: collab, ShareDB, collab, ShareDB, ...
                    # ShareDB on PostgreSQL needs a non-empty text (see server.js); the
                    # durable pair both start from it.
                    seed = HOT_SEED if kind.endswith("-postgres") else ""
                    with self.server_for(kind, [doc], seed) as server:
                        log(f"hot document, {n} clients: {kind}"
                            + (f" (round {round_ + 1})" if self.args.rounds > 1 else ""))
                        result = run_load(
                            server, "collab" if kind.startswith("collab") else "sharedb",
                            clients, "closed", self.sizes, self.workdir, self.args.procs,
                            profile=self.profile(f"hot{n}-{kind}")
                            if kind.startswith("collab") else None,
                            database_cpu=kind.endswith("-postgres"))
                        result.peak_rss = server.stop()
                    runs[kind].append(result.summary())
                    log(f"  {result.ops_per_second:,.0f} ops/s, ack p99 "
                        f"{fmt(result.ack['p99'])} ms")
            for kind, summaries in runs.items():
                results[kind][n] = median_run(summaries)
        self.results["hot"] = results

    def crowd(self) -> None:
        n = self.sizes.crowd_clients
        clients = [("crowd", f"t{i}") for i in range(n)]
        full = self.args.crowd_full_clients
        with self.collab_server("crowd") as server:
            token = mint_token(SECRET, "bench", ttl=3600)
            status, body = http_post(server.port, "/documents",
                                     {"id": "crowd", "content": CROWD_SEED}, token)
            if status != 201:
                raise RuntimeError(f"creating the crowd document: {status} {body!r}")
            log(f"crowd: {n} typists at {self.sizes.rate}/s on one document "
                f"({full} full clients per driver process, the others light)")
            result = run_load(server, "collab", clients, "open", self.sizes, self.workdir,
                              self.args.procs, rate=self.sizes.rate, profile=self.profile("crowd"),
                              full_clients=full, seed_length=len(CROWD_SEED))
            result.peak_rss = server.stop()
        self.results["crowd"] = result.summary()
        log(f"  peer p95 {result.peer['p95']:.1f} ms, server CPU {result.server_cpu:.0%}")

    def many(self) -> None:
        """Many rooms: two authors per document typing at the open-loop rate; with --vs-sharedb
        the same load on ShareDB, and the durable pair on PostgreSQL, side by side."""
        docs = self.args.documents or self.sizes.many_docs
        names = [f"doc-{d}" for d in range(docs)]
        clients = [(doc, f"m{d}-{i}") for d, doc in enumerate(names) for i in range(2)]
        kinds = ["collab"]
        if self.args.vs_sharedb:
            kinds = [kind for pair in self.pairs() for kind in pair]
        results: dict[str, Any] = {}
        for kind in kinds:
            seed = HOT_SEED if kind.endswith("-postgres") else ""
            with self.server_for(kind, names, seed) as server:
                log(f"many rooms: {docs} documents, 2 authors each at {self.sizes.rate}/s: {kind}")
                result = run_load(
                    server, "collab" if kind.startswith("collab") else "sharedb", clients,
                    "open", self.sizes, self.workdir, self.args.procs, rate=self.sizes.rate,
                    profile=self.profile(f"many-{kind}") if kind.startswith("collab") else None,
                    database_cpu=kind.endswith("-postgres"))
                result.peak_rss = server.stop()
            results[kind] = result.summary()
            if self.args.trace and kind == "collab":
                results[kind]["trace"] = summarize_trace(
                    self.workdir / f"trace-{kind}-{len(names)}.json", self.sizes)
            log(f"  {result.ops_per_second:,.0f} acked/s, peer p95 {fmt(result.peer['p95'])} ms, "
                f"CPU/op {fmt(results[kind]['server_cpu_us_per_op'], 0)} µs")
        self.results["many_rooms"] = results

    def cluster(self) -> None:
        """The many-documents load on PostgreSQL: one process, then two joined by Redis."""
        try:
            database = asyncio.run(create_database(BENCH_POSTGRES_URL))
        except OSError as error:
            log(f"cluster: skipped, PostgreSQL unreachable at {BENCH_POSTGRES_URL}: {error}")
            return
        docs = self.args.documents or self.sizes.many_docs
        results: dict[str, Any] = {}
        try:
            env = {"COLLAB_DATABASE_URL": database, "COLLAB_JWT_SECRET": SECRET,
                   **UNTHROTTLED, **self.extra_env}
            subprocess.run([str(COLLAB), "migrate"], env={**os.environ, **env}, check=True,
                           cwd=str(self.workdir), capture_output=True)
            for count in (1, 2):
                # Both runs share the database: fresh documents and sources for each, or the
                # second run's ops would be taken for resends of the first's.
                clients = [(f"p{count}-doc-{d}", f"p{count}-m{d}-{i}")
                           for d in range(docs) for i in range(2)]
                if count > 1 and self.args.colocate:
                    clients = colocated(clients, docs)
                node_env = dict(env)
                if count > 1:
                    node_env["COLLAB_REDIS_URL"] = BENCH_REDIS_URL
                    node_env["COLLAB_REDIS_PREFIX"] = f"bench-{os.getpid()}-{count}:"
                servers = [Server("collab", self.workdir, [], self.traced(node_env,
                                                                          f"cluster-{count}-{i}"))
                           for i in range(count)]
                for server in servers:
                    server.start()
                try:
                    log(f"many documents on PostgreSQL, {count} process(es): {docs} documents")
                    result = run_load(servers[0], "collab", clients, "open", self.sizes,
                                      self.workdir, max(self.args.procs, count),
                                      rate=self.sizes.rate, also=servers[1:],
                                      profile=self.profile(f"cluster{count}"),
                                      database_cpu=True)
                finally:
                    peaks = [server.stop() for server in servers]
                result.peak_rss = sum(peaks)
                results[str(count)] = result.summary()
                if self.args.trace:
                    results[str(count)]["counts"] = [
                        orjson.loads((self.workdir / f"trace-cluster-{count}-{i}.json")
                                     .read_bytes()).get("counts")
                        for i in range(count)
                    ]
                    log(f"  per process: {results[str(count)]['counts']}")
                log(f"  {result.ops_per_second:,.0f} ops/s, peer p95 {fmt(result.peer['p95'])} ms")
        finally:
            asyncio.run(drop_database(BENCH_POSTGRES_URL, database))
        self.results["cluster"] = results

    def connections(self) -> None:
        n = self.sizes.connections
        docs = max(1, n // self.args.per_document)
        clients = [(f"idle-{i % docs}", f"i{i}") for i in range(n)]
        sizes = Sizes(**{**asdict(self.sizes), "warmup": 0.0, "duration": 0.1})
        with self.collab_server("connections") as server:
            log(f"connections: {n} idle connections on {docs} documents")
            # A few connections first, so code paths and caches are warm in the baseline.
            warm = [(f"warm-{i}", f"w{i}") for i in range(5)]
            run_load(server, "collab", warm, "idle", sizes, self.workdir, 1)
            baseline = settle(server)
            holder: dict[str, Any] = {}

            def measure_when_ready(result: LoadResult) -> None:
                holder["rss"] = settle(server)

            result = run_idle(server, clients, sizes, self.workdir, self.args.procs,
                              measure_when_ready)
            peak = server.stop()
        delta = holder["rss"] - baseline
        self.results["connections"] = {
            "connections": n,
            "documents": docs,
            "baseline_rss": baseline,
            "loaded_rss": holder["rss"],
            "bytes_per_connection": delta / n,
            "peak_rss": peak,
            "driver_errors": result.errors,
        }
        log(f"  {delta / n / 1024:.1f} KiB per idle connection")

    def history(self) -> None:
        n = self.sizes.history_ops
        server = self.collab_server("history")
        db = Path(server.env["COLLAB_DATABASE_URL"].split("///", 1)[1])
        log(f"history: writing a {n:,}-op document")
        began = time.perf_counter()
        expected = build_history(db, "hist", n, int(server.env.get("COLLAB_SNAPSHOT_EVERY",
                                                                   "100")))
        log(f"  built in {time.perf_counter() - began:.1f} s")
        token = mint_token(SECRET, "bench", ttl=3600)
        rng = random.Random(3)
        with server:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            headers = {"Authorization": f"Bearer {token}"}
            for rev, text in expected.items():  # correctness first, and a warm-up
                conn.request("GET", f"/documents/hist/content?rev={rev}", headers=headers)
                body = orjson.loads(conn.getresponse().read())
                if body.get("content") != text or body.get("rev") != rev:
                    raise RuntimeError(f"content at {rev} differs from the written history")
            timings = []
            began = time.perf_counter()
            for _ in range(self.sizes.history_requests):
                rev = rng.randint(0, n)
                t0 = time.perf_counter()
                conn.request("GET", f"/documents/hist/content?rev={rev}", headers=headers)
                response = conn.getresponse()
                response.read()
                timings.append(time.perf_counter() - t0)
                if response.status != 200:
                    raise RuntimeError(f"GET content?rev={rev}: {response.status}")
            wall = time.perf_counter() - began
            conn.close()
            peak = server.stop()
        timings.sort()
        self.results["history"] = {
            "ops": n,
            "requests": len(timings),
            "p50_ms": quantile(timings, 50) * 1000,
            "p99_ms": quantile(timings, 99) * 1000,
            "mean_ms": statistics.fmean(timings) * 1000,
            "requests_per_second": len(timings) / wall,
            "peak_rss": peak,
        }
        log(f"  p50 {self.results['history']['p50_ms']:.2f} ms, "
            f"p99 {self.results['history']['p99_ms']:.2f} ms")

    def abuse(self) -> None:
        """The attacks of issue 17 beside a normal typist, on a server with its default limits:
        stale ops at revision 0 on a long document, ops pipelined on one socket, a REST op flood
        from one token and many sockets under one token; the typist's ack latency and
        ``/healthz`` latency are what the protections must keep."""
        n = self.sizes.abuse_revisions
        server = self.collab_server("abuse", limits={})
        db = Path(server.env["COLLAB_DATABASE_URL"].split("///", 1)[1])
        log(f"abuse: writing a {n:,}-revision document")
        build_history(db, "long", n, int(server.env.get("COLLAB_SNAPSHOT_EVERY", "100")))
        with server:
            create_documents(server, ["calm", "flood", "sockets"], "")
            cpu_before = server.cpu()
            began = time.monotonic()
            result = run_abuse(server.port, self.sizes.abuse_duration, self.args.attacks)
            wall = time.monotonic() - began
            result["server_cpu"] = (server.cpu() - cpu_before) / wall
            result["revisions"] = n
            result["peak_rss"] = server.stop()
        self.results["abuse"] = result
        log(f"  typist ack p99 {fmt(result['typist']['p99'])} ms, /healthz p99 "
            f"{fmt(result['healthz']['p99'])} ms, max {fmt(result['healthz']['max'])} ms")

    def yjs(self) -> None:
        """N WebsocketProviders on one room, each typing ``yjs_rate`` updates a second."""
        if shutil.which("node") is None:
            log("yjs: skipped (no node)")
            return
        from tests.yjs_harness import install

        prefix = install()
        shutil.copy(BENCH / "yjs_load.mjs", prefix / "yjs_load.mjs")
        n, rate = self.sizes.yjs_clients, self.sizes.yjs_rate
        token = mint_token(SECRET, "bench", ttl=3600)
        server = self.collab_server("yjs")
        server.env.update({"COLLAB_YJS_MESSAGES_PER_SECOND": "1000000",
                           "COLLAB_YJS_MESSAGES_BURST": "1000000"})
        with server:
            status, body = http_post(server.port, "/documents", {"id": "yjs"}, token)
            if status != 201:
                raise RuntimeError(f"creating the Yjs document: {status} {body!r}")
            log(f"yjs: {n} providers, {rate:g} updates/s each")
            cpu_before = server.cpu()
            done = subprocess.run(
                ["node", "yjs_load.mjs", f"{server.ws_url}/ws/yjs", "yjs", token, str(n),
                 str(rate), str(self.sizes.warmup), str(self.sizes.duration)],
                cwd=prefix, capture_output=True, text=True, timeout=PHASE_TIMEOUT, check=False,
            )
            cpu = server.cpu() - cpu_before
            peak = server.stop()
        self.results["yjs"] = self._yjs_result(done, cpu, peak)
        if self.args.vs_sharedb:
            self.results["yjs_pycrdt_websocket"] = self._yjs_vs_pycrdt_websocket(prefix)

    def _yjs_result(
        self, done: subprocess.CompletedProcess[str], cpu: float, peak: int
    ) -> dict[str, Any]:
        if done.returncode != 0:
            raise RuntimeError(f"yjs load failed: {done.stderr[-2000:]}")
        result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
        # The CPU covers the warm-up and the final convergence too: divide by every update.
        total = result["sent"] * (1 + self.sizes.warmup / self.sizes.duration)
        result.update({"server_cpu_ms_per_update": cpu / max(total, 1) * 1000,
                       "server_cpu_seconds": cpu, "peak_rss": peak})
        log(f"  {result['updates_per_second']:.0f} updates/s, p95 {fmt(result['p95_ms'])} ms, "
            f"{result['server_cpu_ms_per_update']:.2f} ms server CPU per update")
        return result

    def _yjs_vs_pycrdt_websocket(self, prefix: Path) -> dict[str, Any] | None:
        """The same load on pycrdt-websocket's own server (in memory: it stores nothing)."""
        try:
            import pycrdt.websocket  # noqa: F401
        except ImportError:
            log("yjs: pycrdt-websocket is not installed (pip install -e '.[bench]'); skipped")
            return None
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, str(BENCH / "pycrdt_websocket_server.py"), str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=str(self.workdir),
        )
        try:
            assert process.stdout is not None
            if not process.stdout.readline().startswith(b"ready"):
                raise RuntimeError("pycrdt-websocket did not start")
            ps = psutil.Process(process.pid)
            sampler = Sampler(ps)
            sampler.start()
            log(f"yjs: the same load on pycrdt-websocket {self.sizes.yjs_clients} providers")
            times = ps.cpu_times()
            before = times.user + times.system
            done = subprocess.run(
                ["node", "yjs_load.mjs", f"ws://127.0.0.1:{port}", "yjs", "-",
                 str(self.sizes.yjs_clients), str(self.sizes.yjs_rate), str(self.sizes.warmup),
                 str(self.sizes.duration)],
                cwd=prefix, capture_output=True, text=True, timeout=PHASE_TIMEOUT, check=False,
            )
            times = ps.cpu_times()
            peak = sampler.stop()
            if done.returncode != 0:
                # The competitor failing is a result, not the end of the whole run.
                lines = [line for line in done.stderr.splitlines() if line.strip()]
                reason = next((line for line in lines if "Error" in line), "exit "
                              f"{done.returncode}").strip()
                log(f"  pycrdt-websocket's run failed: {reason}")
                return {"failed": reason, "clients": self.sizes.yjs_clients}
            return self._yjs_result(done, times.user + times.system - before, peak)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def run(self, scenarios: list[str]) -> None:
        if self.args.vs_sharedb and {"hot", "many"} & set(scenarios):
            self.args.vs_sharedb = ensure_sharedb()
        try:
            for name in scenarios:
                getattr(self, name)()
        finally:
            if not self.args.keep:
                shutil.rmtree(self.workdir, ignore_errors=True)
            else:
                log(f"kept {self.workdir}")


def summarize_trace(path: Path, sizes: Sizes) -> dict[str, Any]:
    """What ``benchmarks/trace`` recorded in the server: the last ``sizes.duration`` seconds
    before the load stopped are taken as the measured window (the drain after it is quiet)."""
    trace = orjson.loads(path.read_bytes())
    commits, collections, lags = trace["commits"], trace["gc"], trace["lag"]
    if not lags:
        return {}
    # The measured window ends where the lag probe's last busy stretch does: use the commits.
    end = max(c[0] + c[1] for c in commits) if commits else lags[-1][0]
    start = end - sizes.duration
    commits = [c for c in commits if start <= c[0] <= end]
    collections = [g for g in collections if start <= g[0] <= end]
    lags = [lag for lag in lags if start <= lag[0] <= end]
    durations = sorted(c[1] for c in commits)
    lag_values = sorted(lag[1] for lag in lags)
    slow_lags = [lag for lag in lags if lag[1] > 0.02]

    def overlaps(at: float, length: float, spans: list[Any]) -> bool:
        return any(s[0] < at + length and at - PROBE_WINDOW < s[0] + s[1] for s in spans)

    summary = {
        "commits": len(commits),
        "commit_ms": {p: quantile(durations, p) * 1000 for p in (50, 99, 100)} if durations
        else {},
        "commits_over_20ms": sum(d > 0.02 for d in durations),
        "ops_per_commit": statistics.fmean(c[3] for c in commits) if commits else 0,
        "gc": {str(gen): {"count": sum(g[2] == gen for g in collections),
                          "ms_total": sum(g[1] for g in collections if g[2] == gen) * 1000,
                          "ms_max": max((g[1] for g in collections if g[2] == gen),
                                        default=0) * 1000}
               for gen in (0, 1, 2)},
        "lag_ms": {p: quantile(lag_values, p) * 1000 for p in (50, 95, 99, 100)},
        "lags_over_20ms": len(slow_lags),
        "counts": trace.get("counts"),
        "slow_lags_with_gc": sum(overlaps(a - d, d, collections) for a, d in slow_lags),
        "slow_lags_with_slow_commit": sum(
            overlaps(a - d, d, [c for c in commits if c[1] > 0.02]) for a, d in slow_lags),
    }
    log(f"  trace: {summary['commits']} commits, p50/p99/max "
        + "/".join(f"{v:.1f}" for v in summary["commit_ms"].values())
        + f" ms, {summary['commits_over_20ms']} over 20 ms; loop lag p50/p95/p99/max "
        + "/".join(f"{v:.1f}" for v in summary["lag_ms"].values())
        + f" ms, {summary['lags_over_20ms']} over 20 ms ({summary['slow_lags_with_gc']} "
        f"with a GC, {summary['slow_lags_with_slow_commit']} with a slow commit); GC "
        + ", ".join(f"gen {g}: {v['count']}, max {v['ms_max']:.1f} ms"
                    for g, v in summary["gc"].items()))
    return summary


PROBE_WINDOW = 0.005  # the trace's lag probe period


def median_run(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median ops/s of alternating rounds, with every round's ops/s and ack
    p99 beside it."""
    ranked = sorted(summaries, key=lambda r: r["ops_per_second"])
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    if len(summaries) > 1:
        chosen["rounds"] = [
            {"ops_per_second": r["ops_per_second"], "ack_p99": r["ack"]["p99"],
             "server_cpu_us_per_op": r["server_cpu_us_per_op"]}
            for r in summaries
        ]
    return chosen


# -- the abuse scenario ------------------------------------------------------------------------

# Bounds on what each attack may send, whatever the time limit.
STALE_RATE = 50.0
PIPELINED_OPS = 10_000
REST_FLOOD_REQUESTS = 20_000
REST_FLOOD_CONNECTIONS = 4
ATTACK_SOCKETS = 300
HEALTHZ_EVERY = 0.05
ATTACKS = ("stale", "pipeline", "rest", "sockets")
ANSWER_GRACE = 5.0  # seconds an attacker waits after the time limit for answers owed
TYPIST_RATE = 5.0


def latency_summary(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        return {"count": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(samples)
    return {"count": len(ordered), "p50": quantile(ordered, 50) * 1000,
            "p99": quantile(ordered, 99) * 1000, "max": ordered[-1] * 1000}


async def http_request(
    port: int, method: str, path: str, token: str | None = None, body: bytes = b""
) -> int:
    """One HTTP/1.1 request on a fresh connection; returns the status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
                f"Content-Length: {len(body)}"]
        if token:
            head.append(f"Authorization: Bearer {token}")
        if body:
            head.append("Content-Type: application/json")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()
        return int(status_line.split()[1])
    finally:
        writer.close()


def answered(counts: dict[str, int]) -> int:
    return sum(v for k, v in counts.items() if k == "ack" or k.startswith("error"))


def tally(counts: dict[str, int], frame: dict[str, Any]) -> None:
    """Counts a server frame by type (and error code)."""
    if frame.get("type") == "ops":
        for item in frame["items"]:
            tally(counts, item)
        return
    key = frame.get("type", "?")
    if key == "error":
        key = f"error {frame.get('code')}"
    if key != "ack" and not key.startswith("error"):
        return  # the other editors' ops, joins and leaves
    counts[key] = counts.get(key, 0) + 1


def run_abuse(port: int, duration: float, attacks: Sequence[str] = ATTACKS) -> dict[str, Any]:
    """The measurements in one process, the attacks in another, so that the attackers' own
    work cannot delay the typist and the ``/healthz`` poller on the client side."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        # The same measurements without attacks first: the machine's own noise.
        start = time.monotonic() + 0.5
        baseline = pool.submit(abuse_part, port, "measure", start, start + duration / 2, ())
        calm = baseline.result(timeout=duration + 60)
        start = time.monotonic() + 1.0  # CLOCK_MONOTONIC: the same in every process
        parts = [pool.submit(abuse_part, port, part, start, start + duration, attacks)
                 for part in ("measure", "attack")]
        measured, attacks = (future.result(timeout=duration + 120) for future in parts)
    return {"duration": duration, **measured, **attacks,
            "baseline": {"typist": calm["typist"], "healthz": calm["healthz"]},
            "problems": calm["problems"] | measured["problems"] | attacks["problems"]}


def abuse_part(
    port: int, part: str, start: float, end: float, attacks: Sequence[str]
) -> dict[str, Any]:
    return asyncio.run(abuse_tasks(port, part, start, end, attacks))


async def abuse_tasks(
    port: int, part: str, start: float, end: float, attacks: Sequence[str]
) -> dict[str, Any]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    def token(user: str) -> str:
        return mint_token(SECRET, user, name=user, ttl=3600)

    def url(doc: str, user: str) -> str:
        return f"ws://127.0.0.1:{port}/ws/documents/{doc}?token={token(user)}"

    await asyncio.sleep(max(0.0, start - time.monotonic()))  # both parts start together
    typist_acks: list[float] = []
    health: list[float] = []
    health_failed = [0]
    slow: list[tuple[float, float]] = []
    stale: dict[str, int] = {}
    pipelined: dict[str, int] = {}
    rest: dict[str, int] = {}
    sockets: dict[str, int] = {}

    async def typist() -> None:
        async with connect(url("calm", "typist"), max_size=None) as ws:
            init = orjson.loads(await ws.recv())
            rev = init["rev"]
            seq = 0
            while time.monotonic() < end:
                tick = time.monotonic()
                seq += 1
                await ws.send(orjson.dumps({"type": "op", "rev": rev, "op": ["x"],
                                            "src": "typist", "seq": seq}).decode())
                while True:  # one op in flight: wait for its ack
                    remaining = end + 5 - time.monotonic()
                    frame = orjson.loads(await asyncio.wait_for(ws.recv(), max(0.1, remaining)))
                    items = frame["items"] if frame.get("type") == "ops" else [frame]
                    acked = [f for f in items if f.get("type") == "ack" and f.get("seq") == seq]
                    if acked:
                        rev = acked[0]["rev"]
                        typist_acks.append(time.monotonic() - tick)
                        break
                    if any(f.get("type") == "error" for f in items):
                        raise RuntimeError(f"typist refused: {frame}")
                await asyncio.sleep(max(0.0, tick + 1 / TYPIST_RATE - time.monotonic()))

    async def healthz() -> None:
        while time.monotonic() < end:
            tick = time.monotonic()
            try:
                status = await asyncio.wait_for(http_request(port, "GET", "/healthz"), 30)
            except (OSError, TimeoutError):
                status = 0
            if status == 200:
                health.append(time.monotonic() - tick)
                if health[-1] > 0.1:  # when the slow answers came, for the JSON
                    slow.append((round(tick - start, 2), round(health[-1] * 1000, 1)))
            else:
                health_failed[0] += 1
            await asyncio.sleep(max(0.0, tick + HEALTHZ_EVERY - time.monotonic()))

    caught_up = {"stale": asyncio.Event(), "pipeline": asyncio.Event()}

    async def listen(ws: Any, counts: dict[str, int], name: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                tally(counts, orjson.loads(raw))
                if answered(counts) >= counts.get("sent", 0):
                    caught_up[name].set()

    async def closed_by(ws: Any, counts: dict[str, int], name: str) -> None:
        # Answers still owed: wait for them a little, then count the rest as unanswered.
        if answered(counts) < counts.get("sent", 0):
            caught_up[name].clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(caught_up[name].wait(), ANSWER_GRACE)
        counts["unanswered"] = counts.get("sent", 0) - answered(counts)
        if ws.close_code is not None and ws.close_code != 1000:
            counts[f"close {ws.close_code}"] = counts.get(f"close {ws.close_code}", 0) + 1

    async def stale_ops() -> None:
        async with connect(url("long", "stale"), max_size=None) as ws:
            await ws.recv()  # init
            reader = asyncio.create_task(listen(ws, stale, "stale"))
            seq = 0
            with contextlib.suppress(ConnectionClosed):
                while time.monotonic() < end:
                    seq += 1
                    await ws.send(orjson.dumps({"type": "op", "rev": 0, "op": ["s"],
                                                "src": "stale", "seq": seq}).decode())
                    stale["sent"] = seq
                    await asyncio.sleep(1 / STALE_RATE)
            await closed_by(ws, stale, "stale")
            reader.cancel()

    async def pipeline() -> None:
        async with connect(url("long", "pipeline"), max_size=None) as ws:
            init = orjson.loads(await ws.recv())
            reader = asyncio.create_task(listen(ws, pipelined, "pipeline"))
            with contextlib.suppress(ConnectionClosed):
                for seq in range(1, PIPELINED_OPS + 1):
                    await ws.send(orjson.dumps({"type": "op", "rev": init["rev"], "op": ["p"],
                                                "src": "pipeline", "seq": seq}).decode())
                    pipelined["sent"] = seq
            await asyncio.sleep(max(0.0, end - time.monotonic()))
            await closed_by(ws, pipelined, "pipeline")
            reader.cancel()

    async def rest_flood() -> None:
        body = orjson.dumps({"rev": 0, "op": ["r"]})
        flood_token = token("rest")
        budget = [REST_FLOOD_REQUESTS]

        async def one_connection() -> None:
            while time.monotonic() < end and budget[0] > 0:
                budget[0] -= 1
                try:
                    status = await asyncio.wait_for(http_request(
                        port, "POST", "/documents/flood/ops", flood_token, body), 30)
                    key = f"HTTP {status}"
                except (OSError, TimeoutError):
                    key = "failed"
                rest[key] = rest.get(key, 0) + 1

        await asyncio.gather(*(one_connection() for _ in range(REST_FLOOD_CONNECTIONS)))

    async def many_sockets() -> None:
        held = []
        try:
            for _ in range(ATTACK_SOCKETS):
                if time.monotonic() >= end:
                    break
                try:
                    ws = await asyncio.wait_for(connect(url("sockets", "sockets")), 10)
                    held.append(ws)
                    key = "accepted"
                except InvalidStatus as error:
                    key = f"HTTP {error.response.status_code}"
                except (OSError, TimeoutError):
                    key = "failed"
                sockets[key] = sockets.get(key, 0) + 1
            await asyncio.sleep(max(0.0, end - time.monotonic()))
        finally:
            await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)

    every = {"stale": stale_ops, "pipeline": pipeline, "rest": rest_flood,
             "sockets": many_sockets}
    tasks = ({"typist": typist, "healthz": healthz} if part == "measure"
             else {name: every[name] for name in attacks})
    async with asyncio.timeout(max(0.0, end - time.monotonic()) + 60):
        outcomes = await asyncio.gather(*(task() for task in tasks.values()),
                                        return_exceptions=True)
    problems = {name: repr(o) for name, o in zip(tasks, outcomes, strict=True)
                if isinstance(o, BaseException)}
    if part == "measure":
        return {"typist": latency_summary(typist_acks),
                "healthz": latency_summary(health) | {"failed": health_failed[0]},
                "healthz_slow": slow, "problems": problems}
    return {"attacks": list(attacks),
            "stale": stale, "pipelined": pipelined, "rest": rest, "sockets": sockets,
            "problems": problems}


def create_documents(server: Server, docs: list[str], content: str) -> None:
    """Creates ``docs`` on a collab server holding ``content`` (REST ``POST /documents``)."""
    token = mint_token(SECRET, "bench", ttl=3600)
    for doc in docs:
        status, body = http_post(server.port, "/documents", {"id": doc, "content": content},
                                 token)
        if status != 201:
            raise RuntimeError(f"creating {doc}: {status} {body!r}")


def run_idle(
    server: Server, clients: list[tuple[str, str]], sizes: Sizes, workdir: Path, procs: int,
    while_connected: Any,
) -> LoadResult:
    """Connects idle clients, calls ``while_connected`` while they are all open, then closes."""
    token = mint_token(SECRET, "bench", ttl=3600)
    drivers = []
    procs = max(1, min(procs, len(clients)))
    for index in range(procs):
        config = {"protocol": "collab", "url": server.ws_url, "token": token,
                  "clients": clients[index::procs], "mode": "idle", "seed": index + 1}
        drivers.append(DriverProcess(config, workdir / "drivers.log"))
    result = LoadResult(clients=len(clients), duration=sizes.duration)
    try:
        for driver in drivers:
            ready = driver.expect("ready", timeout=STARTUP_TIMEOUT + len(clients) / 20)
            result.errors += ready["failed"]
        while_connected(result)
        now = time.monotonic()
        for driver in drivers:
            driver.send({"cmd": "go", "start": now, "measure": now, "end": now})
        for driver in drivers:
            driver.expect("drained")
        for driver in drivers:
            driver.send({"cmd": "verify", "revs": {}})
        for driver in drivers:
            result.errors += driver.expect("done")["stats"]["errors"]
    finally:
        for driver in drivers:
            driver.finish()
    return result


def settle(server: Server) -> int:
    """The server's resident memory once it has gone quiet (median of a few samples)."""
    samples = []
    for _ in range(10):
        time.sleep(0.2)  # sampling an idle process
        samples.append(server.rss())
    return int(statistics.median(samples[4:]))


def quantile(sorted_values: list[float], p: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def build_history(db: Path, doc_id: str, n: int, snapshot_every: int) -> dict[int, str]:
    """Writes a document with ``n`` ops straight into the database, as the server stores them.

    Rows go through collab's own models and op encoding (SQLAlchemy Core, the same column types),
    with a snapshot every ``snapshot_every`` revisions like the server's. Returns the expected
    text at a few revisions so the benchmark can check the server's answers.
    """
    from sqlalchemy import create_engine, insert

    from collab.models import Document, Operation, Snapshot
    from collab.storage import encode_op

    rng = random.Random(11)
    created = datetime(2026, 1, 1, tzinfo=UTC)
    text = ""
    cursor = 0
    ops: list[dict[str, Any]] = []
    snapshots: list[dict[str, Any]] = [
        {"doc_id": doc_id, "rev": 0, "content": "", "created_at": created}
    ]
    checks = {0, 1, n // 3, n // 2 + 37, n - 1, n}
    expected: dict[int, str] = {0: ""}
    for rev in range(1, n + 1):
        token = f"[{rev}]"
        if rng.random() < 0.05:
            cursor = rng.randrange(0, len(text) + 1)
        cursor = min(cursor, len(text))
        op: list[Any] = [cursor, token] if cursor else [token]
        if len(text) >= TARGET_LENGTH and len(text) - cursor >= len(token):
            op.append({"d": len(token)})
        text = ot.apply(text, op)
        cursor += len(token)
        at = created + timedelta(milliseconds=rev)
        ops.append({"doc_id": doc_id, "rev": rev, "op": encode_op(op), "src": f"h{rev % 7}",
                    "seq": rev, "user_id": "bench", "created_at": at})
        if rev % snapshot_every == 0:
            snapshots.append({"doc_id": doc_id, "rev": rev, "content": text, "created_at": at})
        if rev in checks:
            expected[rev] = text
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(insert(Document), [{"id": doc_id, "title": "history", "rev": n,
                                         "created_at": created,
                                         "updated_at": created + timedelta(milliseconds=n)}])
        for i in range(0, len(ops), 10_000):
            conn.execute(insert(Operation), ops[i : i + 10_000])
        conn.execute(insert(Snapshot), snapshots)
    engine.dispose()
    return expected


def one_op_commits(db: Path, loops: int) -> tuple[Any, list[Any]]:
    """A database of collab's schema with one document, a ``SqliteWriter`` on it, and
    ``loops`` one-op commits for that document, each on the revision the previous one makes."""
    from sqlalchemy import create_engine, insert

    from collab.db import create_writer_engine
    from collab.models import Base, Document
    from collab.storage import CommitRequest
    from collab.storage.sqlite import SqliteWriter
    from collab.types import StoredOp

    created = datetime(2026, 1, 1, tzinfo=UTC)
    engine = create_engine(f"sqlite:///{db}")
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(Document), [{"id": "d", "title": "", "rev": 0,
                                         "created_at": created, "updated_at": created}])
    engine.dispose()
    op = [12, "[1234567890]", {"d": 12}]
    requests = [
        CommitRequest("d", rev - 1, [StoredOp(rev, op, "c2-0", rev, "bench", created)])
        for rev in range(1, loops + 1)
    ]
    writer_engine = create_writer_engine(f"sqlite+aiosqlite:///{db}", sqlite_synchronous="FULL")
    assert writer_engine is not None
    return SqliteWriter(writer_engine), requests


def writer_commit_seconds(db: Path, loops: int) -> float:
    """Seconds for ``loops`` one-op commits awaited one at a time through
    ``SqliteWriter.commit``: its thread, its hand-offs, its Python."""
    writer, requests = one_op_commits(db, loops)

    async def commit_all() -> float:
        began = time.perf_counter()
        for request in requests:
            if not await writer.commit(request):
                raise RuntimeError("the benchmark's document moved")
        elapsed = time.perf_counter() - began
        await writer.close()
        return elapsed

    return asyncio.run(commit_all())


def bare_commit_seconds(db: Path, loops: int) -> float:
    """Seconds for the same commits as bare statements: the writer's compiled SQL and values
    converted beforehand, in a plain sqlite3 loop. No server code can go below it."""
    from collab.db import apply_sqlite_pragmas

    writer, requests = one_op_commits(db, loops)
    # The writer's own statements and converted values, read, not rebuilt.
    transactions = [writer.statements(request) for request in requests]
    asyncio.run(writer.close())
    connection = sqlite3.connect(db, isolation_level=None)
    apply_sqlite_pragmas(connection, "FULL")
    began = time.perf_counter()
    for statements in transactions:
        connection.execute("BEGIN IMMEDIATE")
        for sql, values in statements:
            connection.execute(sql, values)
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - began
    connection.close()
    return elapsed


async def create_database(admin_url: str) -> str:
    """A fresh PostgreSQL database for one benchmark run; returns its URL."""
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    name = f"collab_bench_{os.getpid()}_{int(time.time())}"
    conn = await asyncpg.connect(host=url.host, port=url.port or 5432, user=url.username,
                                 password=url.password, database=url.database)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url.set(database=name).render_as_string(hide_password=False)


async def drop_database(admin_url: str, database_url: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    conn = await asyncpg.connect(host=url.host, port=url.port or 5432, user=url.username,
                                 password=url.password, database=url.database)
    try:
        await conn.execute(
            f'DROP DATABASE IF EXISTS "{make_url(database_url).database}" WITH (FORCE)'
        )
    finally:
        await conn.close()


def ensure_sharedb() -> bool:
    """Installs ShareDB on first use; False (with a note) when node or npm is missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        log("--vs-sharedb needs node and npm on PATH: collab alone this time")
        return False
    modules = SHAREDB_DIR / "node_modules"
    if not all((modules / name).is_dir() for name in ("sharedb", "sharedb-postgres")):
        log("installing ShareDB into benchmarks/sharedb (npm ci: the versions of the lock)")
        subprocess.run(["npm", "ci", "--prefix", str(SHAREDB_DIR), "--no-audit", "--no-fund"],
                       check=True)
    return True


def machine() -> dict[str, Any]:
    import platform

    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# -- output ----------------------------------------------------------------------------------


def flags(r: dict[str, Any]) -> str:
    """Warnings for a load run: clients that never caught up, divergence, error frames."""
    notes = []
    if r["behind"]:
        notes.append(f"{r['behind']} clients still behind when the drain time ran out")
    elif not r["converged"]:
        notes.append("DIVERGED")
    if r["errors"] or r["failures"]:
        notes.append(f"{r['errors']} errors")
    if r["driver_cpu"] >= 0.95:
        # Two cores: when the clients burn one of them, they, not the server, set the pace.
        notes.append(f"client-bound: the client processes used {r['driver_cpu']:.1f} cores")
    info = ""
    if r.get("light"):
        info = (f" {r['light'] / r['clients']:.0%} light clients, peer latency sampled "
                f"(1 frame in {r['peer_sample']});")
    return f"{info} ⚠ {'; '.join(notes)} |" if notes else f"{info} |"


KINDS = ("collab", "sharedb", "collab-postgres", "sharedb-postgres")
PAIRS = (("collab", "sharedb"), ("collab-postgres", "sharedb-postgres"))
LABELS = {
    "collab": "collab (SQLite)",
    "sharedb": "ShareDB (in memory)",
    "collab-postgres": "collab (PostgreSQL)",
    "sharedb-postgres": "ShareDB + sharedb-postgres",
}


def cpu_per_op(r: dict[str, Any], key: str = "server_cpu_us_per_op") -> str:
    value = r.get(key)
    return "-" if value is None else f"{value:,.0f} µs"


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def abuse_rows(a: dict[str, Any]) -> list[str]:
    """One row per measurement of the abuse scenario."""

    def counts(c: dict[str, int]) -> str:
        return ", ".join(f"{k} {v:,}" for k, v in sorted(c.items())) or "-"

    t, h = a["typist"], a["healthz"]
    bt, bh = a["baseline"]["typist"], a["baseline"]["healthz"]
    rows = [
        f"Abuse: default limits, a {a['revisions']:,}-revision document, {a['duration']:.0f} s "
        f"of attacks; server CPU {a['server_cpu']:.0%} of a core, peak RSS "
        f"{a['peak_rss'] / 2**20:.0f} MiB.",
        "",
        "| measurement | load | result |",
        "| --- | --- | --- |",
        f"| Typist ack latency | 5 ops/s on another document, one in flight "
        f"| p50 {fmt(t['p50'])} ms, p99 {fmt(t['p99'])} ms ({t['count']} acks) |",
        f"| `/healthz` latency | every {HEALTHZ_EVERY * 1000:.0f} ms "
        f"| p50 {fmt(h['p50'])} ms, p99 {fmt(h['p99'])} ms, max {fmt(h['max'])} ms "
        f"({h['count']} answers, {h['failed']} failed) |",
        f"| Baseline, no attack | the same typist and poller alone for {a['duration'] / 2:.0f} s "
        f"| typist p50 {fmt(bt['p50'])} ms, p99 {fmt(bt['p99'])} ms; `/healthz` p50 "
        f"{fmt(bh['p50'])} ms, p99 {fmt(bh['p99'])} ms |",
        f"| (a) stale ops | rev 0 on the long document, {STALE_RATE:.0f}/s "
        f"| {counts(a['stale'])} |",
        f"| (b) pipelined ops | {PIPELINED_OPS:,} on one socket at the head revision "
        f"| {counts(a['pipelined'])} |",
        f"| (c) REST op flood | one token, {REST_FLOOD_CONNECTIONS} connections "
        f"| {counts(a['rest'])} |",
        f"| (d) many sockets | up to {ATTACK_SOCKETS} with one token | {counts(a['sockets'])} |",
    ]
    if a["problems"]:
        rows.append(f"| problems | | {a['problems']} |")
    return [*rows, ""]


def markdown(results: dict[str, Any]) -> str:
    lines: list[str] = []
    sizes = results["sizes"]
    commit = results.get("commit")
    hot = results.get("hot")
    if hot:
        lines += [
            f"**Hot document** (closed loop, {sizes['duration']:g} s per level)",
            "",
            "| server | clients | ops/s | deliveries/s | ack p50 | ack p99 | peer p50 | peer p99 "
            "| server CPU | CPU per op | peak RSS | notes |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for kind in KINDS:
            for n, r in hot.get(kind, {}).items():
                lines.append(
                    f"| {LABELS[kind]} | {n} | {fmt(r['ops_per_second'], 0)} "
                    f"| {fmt(r['deliveries_per_second'], 0)} "
                    f"| {fmt(r['ack']['p50'])} ms | {fmt(r['ack']['p99'])} ms "
                    f"| {fmt(r['peer']['p50'])} ms | {fmt(r['peer']['p99'])} ms "
                    f"| {r['server_cpu']:.0%} | {cpu_per_op(r)} "
                    f"| {r['peak_rss'] / 2**20:.0f} MiB |" + flags(r)
                )
        ratios = []
        for ours, theirs in PAIRS:
            for n, r in hot.get(ours, {}).items():
                other = hot.get(theirs, {}).get(n)
                if other and other["ops_per_second"] and other["ack"]["p99"]:
                    ratios.append(
                        f"| {LABELS[ours]} ÷ {LABELS[theirs]} | {n} "
                        f"| {r['ops_per_second'] / other['ops_per_second']:.2f}x "
                        f"| {r['ack']['p99'] / other['ack']['p99']:.2f}x |"
                    )
        if ratios:
            lines += ["", "| pair | clients | ops/s | ack p99 |", "| --- | ---: | ---: | ---: |",
                      *ratios]
        rounds = [
            f"{LABELS[kind]} at {n} clients: " + ", ".join(
                f"{fmt(x['ops_per_second'], 0)} ops/s (ack p99 {fmt(x['ack_p99'])} ms)"
                for x in r["rounds"])
            for kind in KINDS for n, r in hot.get(kind, {}).items() if r.get("rounds")
        ]
        if rounds:
            lines += ["", "Alternating rounds (the table shows the median): "
                      + "; ".join(rounds) + "."]
        if commit and "2" in {str(k) for k in hot.get("collab", {})}:
            two = hot["collab"].get(2) or hot["collab"].get("2")
            bound = commit["commits_per_second"]
            share = two["ops_per_second"] / bound
            lines += ["", f"2 clients reach {share:.0%} of the commit bound "
                      f"({bound:,.0f} durable commits/s: INSERT+COMMIT, WAL, synchronous=FULL)."]
            if "statements_per_second" in commit:
                lines += [f"collab's own commit of one op reaches "
                          f"{commit['statements_per_second'] / bound:.0%} of it as bare "
                          f"statements and {commit['writer_per_second'] / bound:.0%} through "
                          "its writer thread, one commit at a time."]
        lines.append("")
    many = results.get("many_rooms")
    if many:
        # Every server of the run had the same authors (--documents may differ from the size's).
        authors = max(r.get("clients", 0) for r in many.values() if isinstance(r, dict))
        offered = (authors or sizes["many_docs"] * 2) * sizes["rate"]
        lines += [
            f"**Many rooms** ({offered / sizes['rate'] / 2:,.0f} documents, 2 authors each, "
            f"{sizes['rate']:g} keystrokes/s each, one op in flight per author: "
            f"{offered:,.0f} ops/s offered)",
            "",
            "| server | typed/s | acked/s | acked ÷ offered | peer p50 | peer p95 | peer p99 "
            "| server CPU | server CPU per acked op | PostgreSQL CPU per acked op | peak RSS "
            "| notes |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for kind in KINDS:
            r = many.get(kind)
            if r:
                lines.append(
                    f"| {LABELS[kind]} | {fmt(r['typed_per_second'], 0)} "
                    f"| {fmt(r['ops_per_second'], 0)} "
                    f"| {r['ops_per_second'] / offered:.1%} | {fmt(r['peer']['p50'])} ms "
                    f"| {fmt(r['peer']['p95'])} ms | {fmt(r['peer']['p99'])} ms "
                    f"| {r['server_cpu']:.0%} | {cpu_per_op(r)} "
                    f"| {cpu_per_op(r, 'db_cpu_us_per_op')} "
                    f"| {r['peak_rss'] / 2**20:.0f} MiB |" + flags(r)
                )
        ratios = []
        for ours, theirs in PAIRS:
            r, other = many.get(ours), many.get(theirs)
            if r and other and other["peer"]["p95"] and other["server_cpu_us_per_op"]:
                ratios.append(
                    f"| {LABELS[ours]} ÷ {LABELS[theirs]} "
                    f"| {r['ops_per_second'] / other['ops_per_second']:.2f}x "
                    f"| {r['peer']['p95'] / other['peer']['p95']:.2f}x "
                    f"| {r['server_cpu_us_per_op'] / other['server_cpu_us_per_op']:.2f}x |"
                )
        if ratios:
            lines += ["", "| pair | acked/s | peer p95 | server CPU per acked op |",
                      "| --- | ---: | ---: | ---: |", *ratios]
        lines.append("")
    rows = []
    for key, label in (("crowd", "Crowd"),):
        r = results.get(key)
        if r:
            rows.append(
                f"| {label} | {r['clients']} | {fmt(r['typed_per_second'], 0)} "
                f"| {fmt(r['ops_per_second'], 0)} | {fmt(r['peer']['p50'])} ms "
                f"| {fmt(r['peer']['p95'])} ms | {fmt(r['peer']['p99'])} ms "
                f"| {r['server_cpu']:.0%} | {cpu_per_op(r)} | {r['peak_rss'] / 2**20:.0f} MiB |"
                + flags(r)
            )
    for count, r in (results.get("cluster") or {}).items():
        label = "Many documents, PostgreSQL, " + (
            "1 process" if count == "1" else f"{count} processes + Redis"
        )
        rows.append(
            f"| {label} | {r['clients']} | {fmt(r['typed_per_second'], 0)} "
            f"| {fmt(r['ops_per_second'], 0)} | {fmt(r['peer']['p50'])} ms "
            f"| {fmt(r['peer']['p95'])} ms | {fmt(r['peer']['p99'])} ms "
            f"| {r['server_cpu']:.0%} | {cpu_per_op(r)} | {r['peak_rss'] / 2**20:.0f} MiB |"
            + flags(r)
        )
    if rows:
        lines += [
            f"**Open-loop typing** ({sizes['rate']:g} keystrokes/s per client)",
            "",
            "| scenario | clients | keystrokes/s | ops sequenced/s | peer p50 | peer p95 "
            "| peer p99 | server CPU | CPU per op | peak RSS | notes |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
            *rows,
            "",
        ]
        cluster = results.get("cluster") or {}
        one, two = cluster.get("1"), cluster.get("2")
        if one and two and one["server_cpu_us_per_op"] and two["server_cpu_us_per_op"]:
            lines += [f"Cluster: CPU per op with 2 processes + Redis is "
                      f"{two['server_cpu_us_per_op'] / one['server_cpu_us_per_op']:.2f}x one "
                      "process's (both processes' CPU over the ops acknowledged).", ""]
        crowd = results.get("crowd")
        if crowd and crowd.get("light"):
            lines += [
                f"Crowd: {crowd['light']} of {crowd['clients']} clients are light typists (no "
                "text kept, length-preserving replaces in a seeded document); they measure peer "
                f"latency on a random 1 in {crowd['peer_sample']} of the frames they receive, "
                "each sample weighted by that factor. The full clients apply every op and "
                "measure all of them; only their texts are compared with the server's. "
                f"Peer p50/p95 as the {crowd['clients'] - crowd['light']} full clients saw it: "
                f"{fmt(crowd['peer_full']['p50'])} / {fmt(crowd['peer_full']['p95'])} ms; "
                f"as the light clients sampled it: {fmt(crowd['peer_light']['p50'])} / "
                f"{fmt(crowd['peer_light']['p95'])} ms.",
                "",
            ]
    other = []
    c = results.get("connections")
    if c:
        other.append(f"| Idle connections | {c['connections']:,} connections "
                     f"| {c['bytes_per_connection'] / 1024:.1f} KiB per connection "
                     f"| {c['peak_rss'] / 2**20:.0f} MiB |")
    h = results.get("history")
    if h:
        other.append(f"| History | `GET content?rev=R`, {h['ops']:,} ops "
                     f"| p50 {h['p50_ms']:.2f} ms, p99 {h['p99_ms']:.2f} ms "
                     f"| {h['peak_rss'] / 2**20:.0f} MiB |")
    if commit:
        other.append(f"| Commit bound | INSERT+COMMIT, WAL, FULL "
                     f"| {commit['commits_per_second']:,.0f} commits/s "
                     f"({commit['commit_ms']:.3f} ms) | - |")
        if "statements_per_second" in commit:
            other.append(f"| collab's commit of one op | its statements in a bare loop; "
                         f"through its writer thread "
                         f"| {commit['statements_per_second']:,.0f}/s; "
                         f"{commit['writer_per_second']:,.0f}/s | - |")
    for key, label in (("yjs", "Yjs"), ("yjs_pycrdt_websocket", "Yjs, pycrdt-websocket")):
        y = results.get(key)
        if not y:
            continue
        if "failed" in y:
            other.append(f"| {label} | {y['clients']} providers on one document "
                         f"| did not finish: {y['failed']} | - |")
            continue
        other.append(f"| {label} | {y['clients']} providers on one document, "
                     f"{y['updates_per_second']:,.0f} updates/s "
                     f"| integration p50 {fmt(y['p50_ms'])} ms, p95 {fmt(y['p95_ms'])} ms; "
                     f"{y['server_cpu_ms_per_update']:.2f} ms server CPU per update"
                     f"{'' if y['converged'] else '; NOT CONVERGED'} "
                     f"| {y['peak_rss'] / 2**20:.0f} MiB |")
    a = results.get("abuse")
    if a:
        lines += abuse_rows(a)
    if other:
        lines += ["| scenario | load | result | peak RSS |", "| --- | --- | --- | ---: |",
                  *other, ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the full sizes (takes longer)")
    parser.add_argument("--vs-sharedb", action="store_true",
                        help="also run the hot document against ShareDB (needs node and npm)")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS,
                        help="run only this scenario (repeatable)")
    parser.add_argument("--duration", type=float, help="seconds measured per load run")
    parser.add_argument("--procs", type=int, default=2, help="client processes per load run")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for collab serve (to try a setting)")
    parser.add_argument("--profile", metavar="PATH",
                        help="py-spy the collab server in the hot runs (PATH.svg or PATH.json)")
    parser.add_argument("--hot-clients", type=lambda v: tuple(int(x) for x in v.split(",")),
                        help="client counts for the hot document, e.g. 2,20,50")
    parser.add_argument("--crowd-full-clients", type=int, default=CROWD_FULL_CLIENTS,
                        metavar="N", help="full (OT, text-keeping) clients per driver process in "
                        "the crowd; the others are light typists (a large N: all full)")
    parser.add_argument("--documents", type=int, metavar="N",
                        help="documents in the many-documents and cluster scenarios (default: "
                             "100 quick, 500 full)")
    parser.add_argument("--colocate", action="store_true",
                        help="cluster: both authors of a document on the same process (half "
                             "the documents on each), so no op crosses Redis to a peer")
    parser.add_argument("--per-document", type=int, default=10, metavar="N",
                        help="idle connections per document in the connections scenario")
    parser.add_argument("--pair", choices=("all", "memory", "postgres"), default="all",
                        help="with --vs-sharedb: collab on SQLite against ShareDB in memory "
                        "(memory), collab on PostgreSQL against ShareDB with sharedb-postgres "
                        "(postgres), or both (all)")
    parser.add_argument("--rounds", type=int, default=1, metavar="N",
                        help="hot document: N alternating rounds of each server per level "
                        "(the table shows the median round and lists them all)")
    parser.add_argument("--trace", action="store_true",
                        help="many rooms: record the collab server's commit durations, GC "
                        "pauses and event-loop lag (benchmarks/trace/sitecustomize.py)")
    parser.add_argument("--attacks", type=lambda v: tuple(v.split(",")), default=ATTACKS,
                        metavar="A,B", help="the abuse scenario's attacks (default all: "
                        "stale,pipeline,rest,sockets)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    scenarios = args.scenario or list(SCENARIOS)
    bench = Bench(args)
    began = time.monotonic()
    bench.run(scenarios)
    bench.results["seconds"] = round(time.monotonic() - began, 1)
    bench.results["load_average_after"] = os.getloadavg()
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    raw = orjson.dumps(bench.results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    (RESULTS_DIR / f"bench-{stamp}.json").write_bytes(raw)
    (RESULTS_DIR / "latest.json").write_bytes(raw)
    if not args.no_plots and "hot" in bench.results:
        from plots import write_plots

        for path in write_plots(bench.results, IMG_DIR):
            log(f"wrote {path.relative_to(ROOT)}")
    print(markdown(bench.results))
    if bench.results["server_env"]:
        print(f"\nServer environment: {bench.results['server_env']}")
    print(f"\n`{' '.join(['benchmarks/run.py', *sys.argv[1:]])}`, {bench.results['mode']} run, "
          f"{bench.results['seconds']:.0f} s, {bench.results['machine']['cpus']} CPUs, "
          f"load average {bench.results['load_average_before'][0]:.1f} before and "
          f"{bench.results['load_average_after'][0]:.1f} after; "
          f"raw results in benchmarks/results/bench-{stamp}.json")


if __name__ == "__main__":
    main()
