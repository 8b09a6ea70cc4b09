#!/usr/bin/env python3
"""Seeded chaos test for SyncKit: real `syncctl run` processes under churn, then invariants.

What it does, per seed:

  1. Starts N `syncctl run` daemons (default 12) on 127.0.0.1, each with its own folder, port,
     per-node log file and the same test cluster key. Nodes never talk to each other directly:
     for every ordered pair (i, j) the harness runs a tiny TCP proxy, and node i's `--peer`
     list holds the proxy addresses for every j. That lets the harness cut a link (close the
     live connections both ways and refuse new ones) and heal it again, without root and
     without touching the kernel's firewall.
  2. Runs a workload drawn from `random.Random(seed)` for `--duration` seconds: SIGKILL and
     SIGTERM of nodes with a restart 0.5-4 s later, link cuts and heals, new files in random
     folders (also folders of nodes that are down), concurrent writes to four shared "hot"
     files with strictly increasing explicit mtimes, renames and deletes. The harness keeps the
     expected state: every path it made, its SHA-256, and whether it was deleted or renamed
     away (a name is never reused).
  3. Settles: every node up, every link healed, then waits until every folder is identical,
     every daemon says "in sync" and is connected to all others, and that stays so for a few
     seconds.
  4. Checks the invariants, each reported on its own line, and on a failure prints the seed,
     a replay command and the evidence (which nodes hold a resurrected path, each node's index
     record of it, the log lines that mention it, the harness events around it). The work
     directory is kept on failure and deleted on success.

Replay: the seed fixes the schedule of operations (each operation draws its details from its
own sub-seed, so a timing-dependent choice inside one operation does not shift the next ones),
but the daemons' timing is real, so a replay explores the same schedule, not the same
interleaving. Running more seeds is the way to find rare bugs.

Safety: TCP on 127.0.0.1 only (`--bind 127.0.0.1`, proxies on 127.0.0.1), static discovery
only, ports chosen below the kernel's ephemeral range. Every child is started in its own
session and stopped by its PID; all of them are killed on exit, Ctrl-C or an exception.

Python 3.11, standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import collections
import dataclasses
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import stat
import struct
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# A fixed key for the test cluster: the daemons refuse to start without one (or soon will).
CLUSTER_KEY = "synckit-chaos-harness-fixed-test-key-7d1f0c2a9b"
TEMP_SUFFIX = ".synckit-tmp"
CONFLICT_MARK = ".sync-conflict-"
STATE_DIR = ".synckit"
HOT_FILES = [f"hot-{k}.txt" for k in range(4)]
# A daemon's output line that says it crashed (Swift runtime, its backtracer).
CRASH_MARK = re.compile(r"Fatal error:|fatal error:|\*\*\* Program crashed|Crashed thread|💣")

# How often each kind of operation is drawn during the churn (relative weights).
OP_WEIGHTS = {
    "create": 30,
    "hot_edit": 14,
    "rename": 9,
    "delete": 11,
    "kill": 6,
    "term": 1.5,
    "cut": 5,
    "heal": 5,
}


def log(msg: str = "") -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------
# Children: every process the harness starts is registered here, so that it can be killed by
# PID whatever happens (normal end, Ctrl-C, an exception, or interpreter exit).
# ---------------------------------------------------------------------------------------------

class Children:
    procs: dict[int, asyncio.subprocess.Process] = {}
    # Process groups (our children's own, from start_new_session) whose leader has exited but
    # whose output pipe is still open: a descendant lives on (the Swift runtime's crash
    # backtracer, for one). While a member lives, the group ID cannot be reused.
    lingering: set[int] = set()

    @classmethod
    def add(cls, proc: asyncio.subprocess.Process) -> None:
        cls.procs[proc.pid] = proc

    @classmethod
    def forget(cls, proc: asyncio.subprocess.Process) -> None:
        cls.procs.pop(proc.pid, None)

    @classmethod
    def kill_all_sync(cls) -> None:
        """SIGKILL every child still running (only those not reaped yet, so that a PID that
        was recycled by the system is never signalled)."""
        for pid, proc in list(cls.procs.items()):
            if proc.returncode is None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for pgid in list(cls.lingering):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    @classmethod
    async def kill_all(cls) -> None:
        cls.kill_all_sync()
        for proc in list(cls.procs.values()):
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except (asyncio.TimeoutError, Exception):
                pass
            cls.forget(proc)


atexit.register(Children.kill_all_sync)


# ---------------------------------------------------------------------------------------------
# Ports: below the ephemeral range, so that no outgoing connection of a daemon or a proxy can
# sit on a port that a restarted node or a re-opened proxy listener needs again.
# ---------------------------------------------------------------------------------------------

def ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except Exception:
        return 32768


def port_is_free(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def allocate_ports(count: int) -> list[int]:
    """`count` free ports in [10000, ephemeral low), starting at a pseudo-random place (not from
    the seed: ports do not influence the workload) so that parallel runs rarely collide."""
    low, high = 10000, ephemeral_low() - 1
    start = random.SystemRandom().randrange(low, high)
    out: list[int] = []
    p = start
    tried = 0
    while len(out) < count:
        tried += 1
        if tried > (high - low):
            raise RuntimeError("no free ports below the ephemeral range")
        if port_is_free(p):
            out.append(p)
        p += 1
        if p >= high:
            p = low
    return out


# ---------------------------------------------------------------------------------------------
# Timeline: every harness action with its time since the seed started (t=...), in memory for
# the diagnosis and in `harness.log` in the work directory.
# ---------------------------------------------------------------------------------------------

class Timeline:
    def __init__(self, path: Path):
        self.t0 = time.monotonic()
        self.epoch0 = time.time()
        self.events: list[tuple[float, str, dict]] = []
        self.file = open(path, "a", buffering=1)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def epoch_to_t(self, epoch: float) -> float:
        return epoch - self.epoch0

    def add(self, kind: str, **fields) -> float:
        t = self.now()
        self.events.append((t, kind, fields))
        text = " ".join(f"{k}={v}" for k, v in fields.items())
        self.file.write(f"t={t:9.3f} {kind} {text}\n")
        return t

    def close(self) -> None:
        self.file.close()


# ---------------------------------------------------------------------------------------------
# The link proxies.
# ---------------------------------------------------------------------------------------------

class LinkProxies:
    """One listener per ordered pair (i, j) on 127.0.0.1: node i dials it to reach node j, and
    the proxy forwards to node j's port.

    A listener is open only while its link is not cut and node j runs; otherwise it is closed,
    so that a dial is refused exactly as it would be by a real network (a cut link) or a dead
    node, and the daemons back off as they would. A cut also aborts the live connections of
    both directions (i -> j and j -> i)."""

    def __init__(self, n: int, node_ports: list[int], proxy_ports: dict[tuple[int, int], int], timeline: Timeline):
        self.n = n
        self.node_ports = node_ports
        self.ports = proxy_ports
        self.timeline = timeline
        self.servers: dict[tuple[int, int], asyncio.base_events.Server] = {}
        self.conns: dict[tuple[int, int], set] = collections.defaultdict(set)
        self.cut: set[frozenset] = set()
        self.target_up = [False] * n
        self.bytes = 0
        self.tasks: set[asyncio.Task] = set()

    def wanted_open(self, pair: tuple[int, int]) -> bool:
        i, j = pair
        return self.target_up[j] and frozenset(pair) not in self.cut

    async def sync_listeners(self) -> None:
        """Opens and closes listeners to match the wanted state."""
        for pair in self.ports:
            want = self.wanted_open(pair)
            have = pair in self.servers
            if want and not have:
                for attempt in range(20):
                    try:
                        srv = await asyncio.start_server(
                            lambda r, w, pair=pair: self._handle(pair, r, w),
                            "127.0.0.1", self.ports[pair], reuse_address=True)
                        self.servers[pair] = srv
                        break
                    except OSError as e:
                        if attempt == 19:
                            self.timeline.add("proxy-error", pair=pair, error=e)
                        await asyncio.sleep(0.1)
            elif have and not want:
                self.servers.pop(pair).close()

    def abort_pair(self, pair: tuple[int, int]) -> int:
        """Aborts the live connections through one direction's proxy; returns how many."""
        closed = 0
        for client, upstream in list(self.conns[pair]):
            for w in (client, upstream):
                try:
                    w.transport.abort()
                except Exception:
                    pass
            closed += 1
        self.conns[pair].clear()
        return closed

    async def set_node_up(self, j: int, up: bool) -> None:
        self.target_up[j] = up
        await self.sync_listeners()

    async def cut_link(self, i: int, j: int) -> int:
        self.cut.add(frozenset((i, j)))
        await self.sync_listeners()
        return self.abort_pair((i, j)) + self.abort_pair((j, i))

    async def heal_link(self, i: int, j: int) -> None:
        self.cut.discard(frozenset((i, j)))
        await self.sync_listeners()

    async def heal_all(self) -> None:
        self.cut.clear()
        await self.sync_listeners()

    async def _handle(self, pair, reader, writer) -> None:
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            if not self.wanted_open(pair):
                writer.transport.abort()
                return
            try:
                ur, uw = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.node_ports[pair[1]]), 3)
            except Exception:
                writer.transport.abort()
                return
            if not self.wanted_open(pair):  # cut while connecting
                writer.transport.abort()
                uw.transport.abort()
                return
            conn = (writer, uw)
            self.conns[pair].add(conn)
            try:
                await asyncio.gather(self._pump(reader, uw), self._pump(ur, writer))
            finally:
                self.conns[pair].discard(conn)
        finally:
            self.tasks.discard(task)

    async def _pump(self, reader, writer) -> None:
        """Copies one direction until EOF or an error, then closes the writer (gracefully, so
        that a goodbye message already queued still goes out; a cut uses abort instead)."""
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                self.bytes += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def close(self) -> None:
        for srv in self.servers.values():
            srv.close()
        self.servers.clear()
        for pair in list(self.conns):
            self.abort_pair(pair)
        for t in list(self.tasks):
            t.cancel()


# ---------------------------------------------------------------------------------------------
# Nodes: one `syncctl run` process at a time per node, restarted with the same folder and port.
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Exit:
    node: str
    pid: int
    incarnation: int
    t: float
    returncode: int
    expected: str | None   # "kill", "term", "final" or None (exited by itself)
    early: bool = False    # died before it logged "starting" (signal handling not set up yet)


class Node:
    def __init__(self, idx: int, name: str, folder: Path, port: int, logpath: Path):
        self.idx = idx
        self.name = name
        self.folder = folder
        self.port = port
        self.logpath = logpath
        self.logfile = open(logpath, "a", buffering=1, errors="replace")
        self.proc: asyncio.subprocess.Process | None = None
        self.state = "down"            # up | stopping | down
        self.expected_stop: str | None = None
        self.last_stop_clean = True    # last stop was a graceful one that exited 0
        self.incarnation = 0
        self.node_id: str | None = None
        self.logged_start = False      # the current process has logged its "starting" line
        self.ready = False             # ... and "listening": its start-up scan is done
        self.reader_task: asyncio.Task | None = None
        self.waiter_task: asyncio.Task | None = None

    def mark(self, t: float, text: str) -> None:
        """A harness marker in the node's log, so that a grep of the log shows what the
        harness did to this node and its folder, in order with the daemon's own lines."""
        self.logfile.write(f"{t:9.3f} ### harness: {text}\n")


class Cluster:
    def __init__(self, cfg, workdir: Path, timeline: Timeline):
        self.cfg = cfg
        self.workdir = workdir
        self.timeline = timeline
        n = cfg.nodes
        ports = allocate_ports(n + n * (n - 1))
        self.node_ports = ports[:n]
        proxy_ports = {}
        k = n
        for i in range(n):
            for j in range(n):
                if i != j:
                    proxy_ports[(i, j)] = ports[k]
                    k += 1
        self.proxies = LinkProxies(n, self.node_ports, proxy_ports, timeline)
        self.nodes: list[Node] = []
        for i in range(n):
            folder = workdir / "nodes" / f"n{i}"
            folder.mkdir(parents=True, exist_ok=True)
            self.nodes.append(Node(i, f"n{i}", folder, self.node_ports[i], workdir / "logs" / f"n{i}.log"))
        self.exits: list[Exit] = []
        self.unexpected: list[Exit] = []
        self.crashes: list[tuple[str, int, float, str]] = []  # node, pid, t, the line
        self.restart_tasks: set[asyncio.Task] = set()
        self.accept_restarts = True
        self.hurry = asyncio.Event()
        self.counts = collections.Counter()
        self.bg: set[asyncio.Task] = set()

    def spawn(self, coro) -> asyncio.Task:
        t = asyncio.create_task(coro)
        self.bg.add(t)
        t.add_done_callback(self.bg.discard)
        return t

    def args(self, node: Node) -> list[str]:
        a = [str(self.cfg.syncctl), "run", "--dir", str(node.folder), "--port", str(node.port),
             "--bind", "127.0.0.1", "--discovery", "static", "--log", "stderr",
             "--log-level", self.cfg.log_level, "--name", node.name]
        for j in range(self.cfg.nodes):
            if j != node.idx:
                a += ["--peer", f"127.0.0.1:{self.proxies.ports[(node.idx, j)]}"]
        return a

    async def start(self, node: Node) -> None:
        if node.state != "down":
            return
        node.state = "starting"  # claimed: a second start() of this node returns at once
        try:
            # The previous process must be reaped first (a SIGKILL is delivered at once, but
            # the exit is seen a moment later): the new one needs its port.
            while node.proc is not None:
                await asyncio.sleep(0.02)
            if node.incarnation >= 1:
                self.save_index(node, node.incarnation + 1)
            env = dict(os.environ)
            env["SYNCKIT_CLUSTER_KEY"] = CLUSTER_KEY
            # stdout and stderr go through the harness, which prefixes each line with its own
            # clock (ms, the same t= as harness.log) before writing it to the node's log
            # file: the daemon's timestamps have a resolution of one second.
            proc = await asyncio.create_subprocess_exec(
                *self.args(node), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True, limit=1 << 20)
        finally:
            if node.state == "starting" and node.proc is None:
                node.state = "down"  # cancelled or failed before the process existed
        Children.add(proc)
        node.incarnation += 1
        node.expected_stop = None
        node.logged_start = False
        node.ready = False
        node.proc = proc
        node.state = "up"
        t = self.timeline.add("start", node=node.name, pid=proc.pid, incarnation=node.incarnation)
        node.mark(t, f"started pid {proc.pid} (incarnation {node.incarnation})")
        self.counts["starts"] += 1
        node.reader_task = asyncio.create_task(self._read_output(node, proc))
        node.waiter_task = asyncio.create_task(self._wait_exit(node, proc, node.incarnation, node.reader_task))
        await self.proxies.set_node_up(node.idx, True)

    def save_index(self, node: Node, incarnation: int) -> None:
        """Copies the node's SQLite index (with its WAL) as the restart will find it, to
        `index-at-start/nN.K/`: the diagnosis reads from it what the node knew of a path when
        it started again (a record lost to a kill shows up as "no record" there)."""
        src = node.folder / STATE_DIR
        dst = self.workdir / "index-at-start" / f"{node.name}.{incarnation}"
        try:
            dst.mkdir(parents=True, exist_ok=True)
            for name in ("index.db", "index.db-wal"):
                if (src / name).exists():
                    shutil.copyfile(src / name, dst / name)
        except OSError as e:
            self.timeline.add("index-copy-failed", node=node.name, error=e)

    async def _read_output(self, node: Node, proc) -> None:
        while True:
            try:
                line = await proc.stdout.readline()
            except ValueError:  # a line longer than the limit: take it in pieces
                line = await proc.stdout.read(1 << 20)
            if not line:
                break
            text = line.decode("utf-8", "replace").rstrip("\n")
            if "[SyncKit] listening" in text and node.proc is proc:
                node.ready = True
            if CRASH_MARK.search(text):
                self.note_crash(node, proc, text)
            if "[SyncKit] starting" in text and node.proc is proc:
                node.logged_start = True
                m = re.search(r"node\.id=([A-Z2-7]{7}(?:-[A-Z2-7]{7}){7})", text)
                if m and node.node_id is None:
                    node.node_id = m.group(1)
            node.logfile.write(f"{self.timeline.now():9.3f} {text}\n")

    def note_crash(self, node: Node, proc, line: str) -> None:
        """A crash message in a daemon's output (Swift's "Fatal error", the backtracer's
        banner): recorded for check 7. The Swift runtime keeps a crashed process alive while
        its backtracer runs; should that hang, the process is killed after 40 s so that the
        run goes on (and the node is restarted)."""
        first = not any(c[1] == proc.pid for c in self.crashes)
        t = self.timeline.add("crash", node=node.name, pid=proc.pid, line=line.strip()[:200])
        self.crashes.append((node.name, proc.pid, t, line.strip()))
        if first:
            log(f"  !! {node.name} (pid {proc.pid}) crashed at t={t:.1f}s: {line.strip()[:160]}")
            self.spawn(self._crash_watchdog(node, proc))

    async def _crash_watchdog(self, node: Node, proc) -> None:
        for _ in range(400):
            if proc.returncode is not None:
                return
            await asyncio.sleep(0.1)
        if proc.returncode is None and node.proc is proc:
            self.signal(node, signal.SIGKILL, "crash-kill")
            node.state = "down"
            node.last_stop_clean = False

    async def _wait_exit(self, node: Node, proc, incarnation: int, reader: asyncio.Task) -> None:
        # Not `proc.wait()`: in asyncio it also waits for the output pipe to close, which a
        # descendant (the crash backtracer) can keep open for ever. The return code is set as
        # soon as the process is reaped.
        while proc.returncode is None:
            await asyncio.sleep(0.02)
        rc = proc.returncode
        # The rest of its output normally follows at once; if not, drain it in the background.
        done, _ = await asyncio.wait({reader}, timeout=1.0)
        if done:
            Children.forget(proc)
        else:
            self.spawn(self._drain_after_exit(node, proc, reader))
        expected = node.expected_stop
        ex = Exit(node.name, proc.pid, incarnation, self.timeline.now(), rc, expected,
                  early=not node.logged_start if node.proc is proc else False)
        self.exits.append(ex)
        t = self.timeline.add("exit", node=node.name, pid=proc.pid, rc=rc, expected=expected)
        node.mark(t, f"pid {proc.pid} exited rc={rc} (expected: {expected})")
        if node.proc is proc:
            node.proc = None
            if node.state != "starting":
                node.state = "down"
            node.last_stop_clean = expected in ("term", "final") and rc == 0
            await self.proxies.set_node_up(node.idx, False)
        if expected is None:
            # Exited by itself: a failure of invariant 7. Restart it (after a pause) so that
            # the run goes on and the other invariants still get checked.
            self.unexpected.append(ex)
            log(f"  !! {node.name} (pid {proc.pid}) exited by itself with status {rc} at t={t:.1f}s")
        if (expected is None or expected == "crash-kill") and self.accept_restarts:
            self.schedule_restart(node, 1.0)

    async def _drain_after_exit(self, node: Node, proc, reader: asyncio.Task) -> None:
        """The process is gone but its output pipe is still open: something it started lives
        on. Read on for up to 30 s (a crash backtrace is worth having), then kill what is
        left of the process's own group (its session, from start_new_session)."""
        Children.lingering.add(proc.pid)
        t = self.timeline.add("output-still-open", node=node.name, pid=proc.pid)
        node.mark(t, f"pid {proc.pid} has exited but its output is still open (a helper it started, "
                     f"such as the crash backtracer?): reading on for up to 30 s")
        done, _ = await asyncio.wait({reader}, timeout=30)
        if not done:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
                t = self.timeline.add("killpg", node=node.name, pgid=proc.pid)
                node.mark(t, f"killed what was left of process group {proc.pid}")
            except (ProcessLookupError, PermissionError):
                pass
            done, _ = await asyncio.wait({reader}, timeout=3)
            if not done:
                reader.cancel()
        Children.lingering.discard(proc.pid)
        Children.forget(proc)

    def schedule_restart(self, node: Node, delay: float) -> None:
        async def later():
            # The pause ends early when the churn is over (`hurry`): the settle phase then
            # waits for these tasks instead of cancelling them half-way through a start.
            try:
                await asyncio.wait_for(self.hurry.wait(), delay)
            except asyncio.TimeoutError:
                pass
            # A SIGTERM'd node may still be stopping: wait for its exit first.
            while node.state == "stopping" or node.proc is not None:
                await asyncio.sleep(0.05)
            if self.accept_restarts and node.state == "down":
                self.counts["restarts"] += 1
                await self.start(node)
        task = asyncio.create_task(later())
        self.restart_tasks.add(task)
        task.add_done_callback(self.restart_tasks.discard)

    def signal(self, node: Node, sig: int, why: str) -> bool:
        proc = node.proc
        if proc is None or proc.returncode is not None:
            return False
        node.expected_stop = why
        node.state = "stopping" if sig == signal.SIGTERM else node.state
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            return False
        t = self.timeline.add("signal", node=node.name, pid=proc.pid, sig=signal.Signals(sig).name, why=why)
        node.mark(t, f"sent {signal.Signals(sig).name} to pid {proc.pid} ({why})")
        return True

    async def kill(self, node: Node, restart_after: float | None) -> bool:
        if not self.signal(node, signal.SIGKILL, "kill"):
            return False
        # Down from now on for the workload (an edit now is an offline edit); the exit watcher
        # clears `proc` a moment later.
        node.state = "down"
        node.last_stop_clean = False
        self.counts["kills"] += 1
        if restart_after is not None:
            self.schedule_restart(node, restart_after)
        return True

    async def term(self, node: Node, restart_after: float | None, why="term") -> bool:
        if not self.signal(node, signal.SIGTERM, why):
            return False
        self.counts["terms"] += 1 if why == "term" else 0
        self.spawn(self._term_watchdog(node, node.proc, node.incarnation))
        if restart_after is not None:
            self.schedule_restart(node, restart_after)
        return True

    async def _term_watchdog(self, node: Node, proc, incarnation: int) -> None:
        """A graceful stop must end within a few seconds; after 15 s it is a hang: noted as an
        unexpected outcome, then the process is killed."""
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), 15)
        except asyncio.TimeoutError:
            t = self.timeline.add("term-hang", node=node.name, pid=proc.pid)
            self.unexpected.append(Exit(node.name, proc.pid, incarnation, t, -999, "term (hung > 15 s)"))
            if proc.returncode is None:
                os.kill(proc.pid, signal.SIGKILL)

    def up_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.state == "up"]

    def down_count(self) -> int:
        return sum(1 for n in self.nodes if n.state != "up")

    async def wait_all_stopped(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(n.proc is not None for n in self.nodes) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def stop_all(self) -> None:
        """Graceful stop of every node (the end of a seed), then a kill for any that hangs."""
        self.accept_restarts = False
        self.hurry.set()
        await asyncio.gather(*self.restart_tasks, return_exceptions=True)
        for node in self.nodes:
            if node.proc is not None and node.state == "up":
                self.signal(node, signal.SIGTERM, "final")
        await self.wait_all_stopped(15)
        for node in self.nodes:
            if node.proc is not None:
                t = self.timeline.add("final-hang", node=node.name, pid=node.proc.pid)
                self.unexpected.append(Exit(node.name, node.proc.pid, node.incarnation, t, -999, "final stop (hung > 15 s)"))
                self.signal(node, signal.SIGKILL, "final-kill")
        await self.wait_all_stopped(5)
        for w in [n.waiter_task for n in self.nodes if n.waiter_task]:
            try:
                await asyncio.wait_for(w, 5)
            except Exception:
                pass

    async def status(self, node: Node) -> dict | None:
        """`syncctl status --dir D --json`, or None when it fails."""
        try:
            proc = await asyncio.create_subprocess_exec(
                str(self.cfg.syncctl), "status", "--dir", str(node.folder), "--json",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError:
            return None
        Children.add(proc)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 10)
            if proc.returncode != 0:
                return None
            return json.loads(out)
        except (asyncio.TimeoutError, json.JSONDecodeError):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            return None
        finally:
            Children.forget(proc)


# ---------------------------------------------------------------------------------------------
# Folder snapshots.
# ---------------------------------------------------------------------------------------------

class Hasher:
    """SHA-256 of files, cached by (size, mtime, ctime, inode) so that a poll every second
    re-reads only what changed."""

    def __init__(self):
        self.cache: dict[tuple, str] = {}

    def sha(self, path: str, st: os.stat_result) -> str | None:
        key = (path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        h = self.cache.get(key)
        if h is None:
            try:
                with open(path, "rb") as f:
                    h = hashlib.file_digest(f, "sha256").hexdigest()
            except OSError:
                return None
            self.cache[key] = h
        return h


def snapshot(folder: Path, hasher: Hasher) -> dict[str, tuple]:
    """Everything in a folder except the daemon's state directory: relative path -> entry.
    A file is ("file", sha256, size, mtime_ns), a directory ("dir",), a link ("link", target)."""
    out: dict[str, tuple] = {}

    def walk(d: str, rel: str) -> None:
        try:
            it = os.scandir(d)
        except OSError:
            return
        with it:
            for e in it:
                p = rel + e.name
                if p == STATE_DIR:
                    continue
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    out[p] = ("dir",)
                    walk(e.path, p + "/")
                elif stat.S_ISLNK(st.st_mode):
                    try:
                        out[p] = ("link", os.readlink(e.path))
                    except OSError:
                        pass
                elif stat.S_ISREG(st.st_mode):
                    h = hasher.sha(e.path, st)
                    if h is not None:
                        out[p] = ("file", h, st.st_size, st.st_mtime_ns)
                else:
                    out[p] = ("other",)

    walk(str(folder), "")
    return out


def is_temp(path: str) -> bool:
    return path.rsplit("/", 1)[-1].endswith(TEMP_SUFFIX)


def is_conflict_copy(path: str) -> bool:
    return CONFLICT_MARK in path.rsplit("/", 1)[-1]


def comparable(snap: dict[str, tuple]) -> dict[str, tuple]:
    """What must be equal on every node: names, kinds and contents (not mtimes; temp files are
    the daemon's own business and checked separately)."""
    return {p: e[:2] for p, e in snap.items() if not is_temp(p)}


def file_sha(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------
# Reading a node's SQLite index (for the diagnosis): the record blob is the wire form of a
# FileRecord followed by the local inode, all integers big-endian (see WireCodec.writeRecord).
# ---------------------------------------------------------------------------------------------

def node_id_text(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=")


def decode_record(blob: bytes) -> dict:
    off = 0

    def take(n):
        nonlocal off
        b = blob[off:off + n]
        off += n
        return b

    def u(fmt):
        nonlocal off
        v = struct.unpack_from(">" + fmt, blob, off)[0]
        off += struct.calcsize(">" + fmt)
        return v

    plen = u("H")
    path = take(plen).decode("utf-8", "replace")
    kind = u("B")
    deleted = u("B")
    size = u("Q")
    mtime = u("q")
    mode = u("I")
    modified_by = node_id_text(take(32))
    nv = u("H")
    version = []
    for _ in range(nv):
        nid = node_id_text(take(32))
        version.append((nid, u("Q")))
    nb = u("I")
    blocks = []
    for _ in range(nb):
        blocks.append(take(32).hex())
        u("I")
    tlen = u("H")
    take(tlen)
    seq = u("Q")
    return {"path": path, "kind": ["file", "dir", "link"][kind] if kind < 3 else kind,
            "deleted": bool(deleted), "size": size, "mtime_ns": mtime, "mode": mode,
            "modified_by": modified_by, "version": version, "sequence": seq, "blocks": blocks}


def read_index_record_copy(db: Path, path: str, table: str = "files") -> dict | None | str:
    """The same from a copy of an index (opened read-write: a WAL database copied without its
    shared-memory file cannot be opened read-only). `table` "intents" reads the pull intent
    of the path instead, in versions of the index that keep them (None when there is none)."""
    if not db.exists():
        return "no index (first start)"
    try:
        con = sqlite3.connect(str(db), timeout=5)
        try:
            if table == "intents" and not con.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'intents'").fetchone():
                return None
            row = con.execute(f"SELECT record FROM {table} WHERE path = ?", (path,)).fetchone()
        finally:
            con.close()
    except sqlite3.Error as e:
        return f"cannot read index copy: {e}"
    if row is None and table == "intents":
        return None
    if row is None:
        return "no record of the path"
    try:
        return decode_record(row[0])
    except Exception as e:
        return f"cannot decode record: {e}"


def read_index_record(db: Path, path: str) -> dict | None | str:
    """The record of `path` in the index database `db` (decoded), None when there is none."""
    if not db.exists():
        return "no index"
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("SELECT record FROM files WHERE path = ?", (path,)).fetchone()
        finally:
            con.close()
    except sqlite3.Error as e:
        return f"cannot read index: {e}"
    if row is None:
        return None
    try:
        return decode_record(row[0])
    except Exception as e:
        return f"cannot decode record: {e}"


# ---------------------------------------------------------------------------------------------
# The expected state and the workload.
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class FileModel:
    path: str
    sha: str
    size: int
    node: str            # where it was written (created, or renamed to)
    t: float
    how: str             # "create" or "rename from X"
    made_offline: bool = False  # written while its node was stopped
    status: str = "live"  # live | deleted | renamed
    gone_t: float = 0.0
    gone_node: str = ""
    gone_offline: bool = False
    renamed_to: str = ""


@dataclasses.dataclass
class HotWrite:
    path: str
    number: int          # write number, over all hot files
    sha: str
    mtime_ns: int
    node: str
    t: float
    offline: bool


class Workload:
    def __init__(self, cfg, cluster: Cluster, timeline: Timeline, workdir: Path):
        self.cfg = cfg
        self.cluster = cluster
        self.timeline = timeline
        self.tmpdir = workdir / "harness-tmp"   # outside every folder, same file system
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, FileModel] = {}
        self.order: list[str] = []               # paths in the order they were made
        self.dirs: set[str] = set()
        self.hot: dict[str, HotWrite] = {}
        self.hot_writes: list[HotWrite] = []
        self.counter = 0
        self.hot_counter = 0
        # Explicit hot-file mtimes: whole seconds from now on, one more per write, so that the
        # last write is always the newest and conflict-copy names (second resolution) differ.
        self.hot_base_s = int(time.time())
        self.ops = collections.Counter()
        self.skipped = collections.Counter()
        self.offline_ops = 0

    # ---- helpers

    def write_atomic(self, dest: Path, data: bytes, mtime_ns: int | None = None) -> None:
        """Writes `data` to a temp file outside the folder (same file system), sets the mtime,
        and renames it into place: the daemon never sees a half-written file, and no temp name
        of ours appears in the folder."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.tmpdir, prefix="w-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            if mtime_ns is not None:
                os.utime(tmp, ns=(mtime_ns, mtime_ns))
            os.replace(tmp, dest)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def pick_dir(self, r: random.Random) -> str:
        x = r.random()
        if x < 0.35:
            return ""
        if x < 0.75:
            return f"d{r.randrange(8)}"
        return f"d{r.randrange(8)}/e{r.randrange(4)}"

    def note_dirs(self, d: str) -> None:
        parts = d.split("/") if d else []
        for k in range(1, len(parts) + 1):
            self.dirs.add("/".join(parts[:k]))

    # ---- set-up

    def seed_initial(self, rng: random.Random) -> None:
        """Before the first start: the hot files on n0, a few files on every node."""
        n0 = self.cluster.nodes[0]
        for path in HOT_FILES:
            self.hot_write(path, n0, rng, initial=True)
        for node in self.cluster.nodes:
            for _ in range(2):
                self.create(random.Random(rng.getrandbits(64)), node=node, initial=True)

    # ---- operations (each takes its own Random, drawn from the seed's stream)

    def create(self, r: random.Random, node: Node | None = None, initial=False) -> str:
        if node is None:
            node = self.cluster.nodes[r.randrange(self.cfg.nodes)]
        d = self.pick_dir(r)
        self.counter += 1
        name = f"f{self.counter:05d}-{r.getrandbits(24):06x}.bin"
        path = f"{d}/{name}" if d else name
        size = r.randrange(0, 4097) if r.random() < 0.4 else r.randrange(0, 200 * 1024 + 1)
        data = r.randbytes(size)
        self.write_atomic(node.folder / path, data)
        self.note_dirs(d)
        sha = hashlib.sha256(data).hexdigest()
        offline = node.state != "up"
        self.offline_ops += offline and not initial
        t = self.timeline.add("create", node=node.name, path=path, size=size, sha=sha[:12], offline=offline)
        node.mark(t, f"create {path} size={size} sha={sha[:12]}{' (node down)' if offline else ''}")
        self.files[path] = FileModel(path, sha, size, node.name, t, "create", made_offline=offline)
        self.order.append(path)
        return "create"

    def hot_write(self, path: str, node: Node, r: random.Random, initial=False) -> None:
        self.hot_counter += 1
        n = self.hot_counter
        mtime_ns = (self.hot_base_s + n) * 1_000_000_000
        header = f"{path} write #{n} on {node.name}\n".encode()
        data = header + r.randbytes(r.randrange(0, 32 * 1024))
        self.write_atomic(node.folder / path, data, mtime_ns)
        sha = hashlib.sha256(data).hexdigest()
        offline = node.state != "up"
        self.offline_ops += offline and not initial
        t = self.timeline.add("hot-write", node=node.name, path=path, number=n, sha=sha[:12], offline=offline)
        node.mark(t, f"hot write #{n} to {path} sha={sha[:12]} mtime={self.hot_base_s + n}{' (node down)' if offline else ''}")
        w = HotWrite(path, n, sha, mtime_ns, node.name, t, offline)
        self.hot[path] = w
        self.hot_writes.append(w)

    def hot_edit(self, r: random.Random) -> str:
        path = HOT_FILES[r.randrange(len(HOT_FILES))]
        node = self.cluster.nodes[r.randrange(self.cfg.nodes)]
        self.hot_write(path, node, r)
        return "hot_edit"

    def may_remove_on(self, node: Node) -> bool:
        """Where a delete or rename may be made (so that the removal is one the daemon can
        know about): on a running node whose start-up scan is done, or whose last stop was
        clean; on a stopped node only after a clean graceful stop (by default). A SIGKILLed
        node may have lost its newest index records (group commit), and a file it never
        recorded cannot be known to be deleted while it was down or before it has scanned
        again. `--offline-removes always` tests that anyway; `never` allows removals on
        running nodes only."""
        # A running node, once its start-up scan is done (or when its index is complete
        # because it stopped cleanly). Before that scan, a node restarted after a SIGKILL is
        # still "down" for this purpose: a file whose record the kill lost and that is removed
        # before the scan is gone without a trace, like an offline removal after a kill.
        if node.state in ("up", "stopping") and (node.ready or node.last_stop_clean):
            return True
        if self.cfg.offline_removes == "always":
            return True
        if self.cfg.offline_removes == "graceful":
            return node.last_stop_clean and node.state != "up"
        return False

    def pick_victim(self, r: random.Random) -> tuple[FileModel, Node] | None:
        """A live file and a node whose copy holds its expected content, so that the delete
        or rename is causally after the create. Half the time among the ten newest files (the
        ones the daemons are still busy spreading)."""
        live = [p for p in self.order if self.files[p].status == "live"]
        if not live:
            return None
        pool = live[-10:] if r.random() < 0.5 else live
        fm = self.files[pool[r.randrange(len(pool))]]
        candidates = [n for n in self.cluster.nodes
                      if self.may_remove_on(n) and file_sha(n.folder / fm.path) == fm.sha]
        if not candidates:
            return None
        return fm, candidates[r.randrange(len(candidates))]

    def delete(self, r: random.Random) -> str:
        got = self.pick_victim(r)
        if got is None:
            self.skipped["delete"] += 1
            return ""
        fm, node = got
        try:
            os.unlink(node.folder / fm.path)
        except OSError as e:
            self.skipped["delete"] += 1
            self.timeline.add("delete-failed", node=node.name, path=fm.path, error=e)
            return ""
        offline = node.state != "up"
        self.offline_ops += offline
        t = self.timeline.add("delete", node=node.name, path=fm.path, offline=offline)
        node.mark(t, f"delete {fm.path}{' (node down)' if offline else ''}")
        fm.status, fm.gone_t, fm.gone_node, fm.gone_offline = "deleted", t, node.name, offline
        return "delete"

    def rename(self, r: random.Random) -> str:
        got = self.pick_victim(r)
        if got is None:
            self.skipped["rename"] += 1
            return ""
        fm, node = got
        d = self.pick_dir(r) if r.random() < 0.5 else fm.path.rpartition("/")[0]
        self.counter += 1
        name = f"r{self.counter:05d}-{r.getrandbits(24):06x}.bin"
        dst = f"{d}/{name}" if d else name
        try:
            (node.folder / dst).parent.mkdir(parents=True, exist_ok=True)
            os.rename(node.folder / fm.path, node.folder / dst)
        except OSError as e:
            self.skipped["rename"] += 1
            self.timeline.add("rename-failed", node=node.name, path=fm.path, error=e)
            return ""
        self.note_dirs(d)
        offline = node.state != "up"
        self.offline_ops += offline
        t = self.timeline.add("rename", node=node.name, path=fm.path, to=dst, offline=offline)
        node.mark(t, f"rename {fm.path} -> {dst}{' (node down)' if offline else ''}")
        fm.status, fm.gone_t, fm.gone_node, fm.gone_offline, fm.renamed_to = "renamed", t, node.name, offline, dst
        self.files[dst] = FileModel(dst, fm.sha, fm.size, node.name, t, f"rename from {fm.path}", made_offline=offline)
        self.order.append(dst)
        return "rename"

    async def kill(self, r: random.Random) -> str:
        ups = self.cluster.up_nodes()
        if not ups or self.cluster.down_count() >= self.cfg.max_down:
            self.skipped["kill"] += 1
            return ""
        node = ups[r.randrange(len(ups))]
        await self.cluster.kill(node, r.uniform(0.5, 4.0))
        return "kill"

    async def term(self, r: random.Random) -> str:
        ups = self.cluster.up_nodes()
        if not ups or self.cluster.down_count() >= self.cfg.max_down:
            self.skipped["term"] += 1
            return ""
        node = ups[r.randrange(len(ups))]
        await self.cluster.term(node, r.uniform(0.5, 4.0))
        return "term"

    async def cut(self, r: random.Random) -> str:
        n = self.cfg.nodes
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)
                 if frozenset((i, j)) not in self.cluster.proxies.cut]
        if not pairs or len(self.cluster.proxies.cut) >= n:
            self.skipped["cut"] += 1
            return ""
        i, j = pairs[r.randrange(len(pairs))]
        closed = await self.cluster.proxies.cut_link(i, j)
        t = self.timeline.add("cut", a=f"n{i}", b=f"n{j}", closed=closed)
        for k in (i, j):
            self.cluster.nodes[k].mark(t, f"cut link n{i}<->n{j} ({closed} live connections aborted)")
        return "cut"

    async def heal(self, r: random.Random) -> str:
        cuts = sorted(tuple(sorted(c)) for c in self.cluster.proxies.cut)
        if not cuts:
            self.skipped["heal"] += 1
            return ""
        i, j = cuts[r.randrange(len(cuts))]
        await self.cluster.proxies.heal_link(i, j)
        t = self.timeline.add("heal", a=f"n{i}", b=f"n{j}")
        for k in (i, j):
            self.cluster.nodes[k].mark(t, f"healed link n{i}<->n{j}")
        return "heal"

    async def churn(self, rng: random.Random, duration: float) -> None:
        """The seeded schedule: pick an operation by weight, give it its own sub-seed, run it,
        wait a random short time; until `duration` has passed."""
        kinds = list(OP_WEIGHTS)
        weights = [OP_WEIGHTS[k] for k in kinds]
        end = time.monotonic() + duration
        while time.monotonic() < end:
            kind = rng.choices(kinds, weights)[0]
            r = random.Random(rng.getrandbits(64))
            pause = rng.expovariate(1.0 / self.cfg.op_interval)
            op = getattr(self, kind)
            done = op(r)
            if asyncio.iscoroutine(done):
                done = await done
            if done:
                self.ops[done] += 1
            await asyncio.sleep(min(pause, 1.0))


# ---------------------------------------------------------------------------------------------
# Settling, invariants, diagnosis.
# ---------------------------------------------------------------------------------------------

class Check:
    """One invariant's verdict, with the details of every violation found."""

    def __init__(self, number: int, title: str):
        self.number = number
        self.title = title
        self.ok = True
        self.details: list[str] = []

    def fail(self, text: str) -> None:
        self.ok = False
        self.details.append(text)


def short_list(items, limit=8) -> str:
    items = list(items)
    s = ", ".join(str(x) for x in items[:limit])
    return s + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def node_set(names: list[str], n: int) -> str:
    return f"{short_list(names, 12)} ({len(names)} of {n})"


class SeedRun:
    """Everything about one seed: its work directory, cluster, workload, settle, checks and
    report."""

    def __init__(self, cfg, seed: int):
        self.cfg = cfg
        self.seed = seed
        base = Path(cfg.workdir) if cfg.workdir else Path(tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"synckit-chaos-s{seed}-", dir=base))
        (self.workdir / "logs").mkdir()
        self.timeline = Timeline(self.workdir / "harness.log")
        self.cluster = Cluster(cfg, self.workdir, self.timeline)
        self.workload = Workload(cfg, self.cluster, self.timeline, self.workdir)
        self.hasher = Hasher()
        self.settle_time: float | None = None
        self.settle_reason: tuple[float, str, str] | None = None
        self.final: dict[str, dict[str, tuple]] = {}
        self.statuses: dict[str, dict | None] = {}
        self.checks: list[Check] = []
        self.verdicts: list[tuple[str, list[str]]] = []
        self.resurrected: list = []
        self.early_terms: list[Exit] = []

    def replay_command(self) -> str:
        c = self.cfg
        me = Path(__file__).resolve()
        script = str(me.relative_to(REPO)) if me.is_relative_to(REPO) else str(me)
        parts = ["python3", script,
                 "--seed", str(self.seed), "--nodes", str(c.nodes), "--duration", str(c.duration),
                 "--settle-timeout", str(c.settle_timeout), "--op-interval", str(c.op_interval),
                 "--max-down", str(c.max_down), "--log-level", c.log_level]
        if c.offline_removes != "graceful":
            parts += ["--offline-removes", c.offline_removes]
        if c.settle_hold != 4.0:
            parts += ["--settle-hold", str(c.settle_hold)]
        # The same binary: Sources may have moved on since.
        parts += ["--syncctl", c.syncctl]
        return "cd " + shlex.quote(str(REPO)) + " && " + " ".join(shlex.quote(p) for p in parts)

    async def run(self) -> bool:
        cfg = self.cfg
        rng = random.Random(self.seed)
        log(f"=== seed {self.seed}: {cfg.nodes} nodes, {cfg.duration:g} s churn, work dir {self.workdir}")
        self.timeline.add("seed", seed=self.seed, nodes=cfg.nodes, duration=cfg.duration, syncctl=cfg.syncctl)
        try:
            self.workload.seed_initial(random.Random(rng.getrandbits(64)))
            for node in self.cluster.nodes:
                await self.cluster.start(node)
            # A short warm-up, so that the cluster has formed before the churn starts.
            await asyncio.sleep(1.5)
            t_churn = self.timeline.add("churn-start")
            await self.workload.churn(rng, cfg.duration)
            self.timeline.add("churn-end", elapsed=f"{self.timeline.now() - t_churn:.1f}")
            await self.settle()
            await self.collect_final()
        finally:
            await self.cluster.stop_all()
            await self.cluster.proxies.close()
        self.evaluate()
        ok = all(c.ok for c in self.checks)
        self.report(ok)
        for node in self.cluster.nodes:
            node.logfile.close()
        self.timeline.close()
        if ok and not cfg.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return ok

    async def snapshots(self) -> dict[str, dict[str, tuple]]:
        def take():
            return {n.name: snapshot(n.folder, self.hasher) for n in self.cluster.nodes}
        return await asyncio.to_thread(take)

    async def all_status(self) -> dict[str, dict | None]:
        res = await asyncio.gather(*(self.cluster.status(n) for n in self.cluster.nodes))
        return {n.name: s for n, s in zip(self.cluster.nodes, res)}

    def status_ok(self, s: dict | None) -> bool:
        if not s or not s.get("inSync"):
            return False
        peers = s.get("peers", [])
        return len(peers) == self.cfg.nodes - 1 and all(p.get("caughtUp") for p in peers)

    async def settle(self) -> None:
        """All nodes up, all links healed, then wait for agreement that holds for a while (a
        resurrection can arrive after the folders were briefly identical)."""
        cl = self.cluster
        # Pending restarts happen now; nodes still stopping after a SIGTERM are given time to
        # exit (their restart task waits for that); then every node that is down starts.
        cl.hurry.set()
        try:
            await asyncio.wait_for(asyncio.gather(*cl.restart_tasks, return_exceptions=True), 30)
        except asyncio.TimeoutError:
            pass
        await cl.proxies.heal_all()
        for node in cl.nodes:
            if node.state == "down":
                await cl.start(node)
        t0 = self.timeline.add("settle-start")
        stable_since = None
        reference = None
        hold = self.cfg.settle_hold
        while True:
            now = self.timeline.now()
            if now - t0 > self.cfg.settle_timeout:
                self.timeline.add("settle-timeout")
                break
            # A node that died by itself during the settle phase is started again.
            for node in cl.nodes:
                if node.state == "down":
                    await cl.start(node)
            snaps = await self.snapshots()
            comps = [comparable(s) for s in snaps.values()]
            identical = all(c == comps[0] for c in comps[1:])
            statuses = await self.all_status() if identical else {}
            agreed = identical and all(self.status_ok(s) for s in statuses.values())
            if not agreed:
                # Why not yet, kept for the report when the settle times out.
                if not identical:
                    differ = sorted(set().union(*comps) - set.intersection(*(set(c) for c in comps))
                                    | {p for p in comps[0] if any(c.get(p) != comps[0][p] for c in comps)})
                    self.settle_reason = (now, "folders", f"folders differ in {len(differ)} path(s): {short_list(differ, 5)}")
                else:
                    bad = [f"{name} (" + ("no answer" if st is None else
                           f"inSync={st.get('inSync')}, {len(st.get('peers', []))} peers, pulling {st.get('pulling')}, failed {st.get('failed')}") + ")"
                           for name, st in statuses.items() if not self.status_ok(st)]
                    self.settle_reason = (now, "status", f"folders identical, but not every daemon is in sync with all peers: {short_list(bad, 4)}")
            if agreed:
                if stable_since is None or comps[0] != reference:
                    stable_since, reference = now, comps[0]
                elif now - stable_since >= hold:
                    self.settle_time = stable_since - t0
                    self.timeline.add("settled", after=f"{self.settle_time:.1f}")
                    break
            else:
                stable_since = None
            await asyncio.sleep(1.0)

    async def collect_final(self) -> None:
        self.final = await self.snapshots()
        self.statuses = await self.all_status()

    # ---- invariants

    def evaluate(self) -> None:
        n = self.cfg.nodes
        names = [node.name for node in self.cluster.nodes]
        final = self.final
        wl = self.workload

        c1 = Check(1, "every folder identical (names, kinds, contents)")
        comps = {name: comparable(final.get(name, {})) for name in names}
        ref_name = names[0]
        all_paths = sorted(set().union(*(set(c) for c in comps.values())))
        diffs = []
        for p in all_paths:
            vals = collections.defaultdict(list)
            for name in names:
                vals[comps[name].get(p, ("absent",))].append(name)
            if len(vals) > 1:
                desc = "; ".join(f"{v[0]}{':' + v[1][:12] if len(v) > 1 else ''} on {short_list(ns, 12)}"
                                 for v, ns in sorted(vals.items(), key=lambda kv: -len(kv[1])))
                diffs.append(f"{p}: {desc}")
        if diffs:
            c1.fail(f"{len(diffs)} path(s) differ between nodes" + (" (settle timed out)" if self.settle_time is None else ""))
            for d in diffs[:15]:
                c1.fail("  " + d)
        elif self.settle_time is None and self.settle_reason and self.settle_reason[1] == "folders":
            # Identical in the end, but not within the settle timeout: a convergence failure.
            t, _, why = self.settle_reason
            c1.fail(f"not identical and in sync for {self.cfg.settle_hold:g} s within the {self.cfg.settle_timeout:g} s "
                    f"settle timeout (identical only at the final look); the last poll that disagreed, at t={t:.1f}s: {why}")
        self.checks.append(c1)

        c2 = Check(2, "every created file never renamed/deleted is present with its content")
        missing = []
        for p in wl.order:
            fm = wl.files[p]
            if fm.status != "live":
                continue
            bad = [name for name in names if final.get(name, {}).get(p, ("absent",))[:2] != ("file", fm.sha)]
            if bad:
                what = collections.Counter(
                    "absent" if p not in final.get(name, {}) else "other content" for name in bad)
                missing.append(f"{p} ({fm.how} on {fm.node} at t={fm.t:.1f}s): {dict(what)} on {node_set(bad, n)}")
        if missing:
            c2.fail(f"{len(missing)} of {sum(1 for f in wl.files.values() if f.status == 'live')} live files missing or wrong")
            for m in missing[:15]:
                c2.fail("  " + m)
        self.checks.append(c2)

        c3 = Check(3, "no deleted or renamed-away path is back on any node")
        self.resurrected = []
        for p in wl.order:
            fm = wl.files[p]
            if fm.status == "live":
                continue
            holders = [name for name in names if p in final.get(name, {})]
            if holders:
                self.resurrected.append((fm, holders))
                how = f"deleted on {fm.gone_node}" if fm.status == "deleted" else f"renamed to {fm.renamed_to} on {fm.gone_node}"
                c3.fail(f"{p} ({how} at t={fm.gone_t:.1f}s{', node down' if fm.gone_offline else ''}) is on {node_set(holders, n)}")
        self.checks.append(c3)

        c4 = Check(4, "every hot file holds its last write everywhere")
        by_sha = {w.sha: w for w in wl.hot_writes}
        for path in HOT_FILES:
            last = wl.hot[path]
            bad = collections.defaultdict(list)
            for name in names:
                e = final.get(name, {}).get(path)
                if e is None:
                    bad["absent"].append(name)
                elif e[0] != "file" or e[1] != last.sha:
                    w = by_sha.get(e[1]) if e[0] == "file" else None
                    bad[f"write #{w.number} ({w.node})" if w else f"unknown content {e[1][:12] if len(e) > 1 else e}"].append(name)
                elif e[3] != last.mtime_ns:
                    bad[f"right content, mtime {e[3]} not {last.mtime_ns}"].append(name)
            if bad:
                c4.fail(f"{path}: last write is #{last.number} (on {last.node} at t={last.t:.1f}s); "
                        + "; ".join(f"{k} on {short_list(v, 12)}" for k, v in bad.items()))
        self.checks.append(c4)

        c5 = Check(5, "no unexpected file (conflict copies allowed)")
        known = set(wl.files) | set(HOT_FILES) | wl.dirs
        unexpected = collections.defaultdict(list)
        conflicts = set()
        for name in names:
            for p, e in final.get(name, {}).items():
                if is_temp(p):
                    continue
                if is_conflict_copy(p):
                    conflicts.add(p)
                    continue
                if p not in known:
                    unexpected[p].append(name)
        for p, ns in sorted(unexpected.items()):
            c5.fail(f"{p} ({final[ns[0]][p][0]}) on {node_set(ns, n)}")
        self.conflict_copies = sorted(conflicts)
        self.checks.append(c5)

        c6 = Check(6, "no temp files (*.synckit-tmp) left")
        for name in names:
            temps = [p for p in final.get(name, {}) if is_temp(p)]
            if temps:
                c6.fail(f"{name}: {short_list(temps)}")
        self.checks.append(c6)

        c7 = Check(7, "no daemon exited by itself (graceful stops exit 0)")
        for ex in self.cluster.unexpected:
            tail = self.log_tail(ex.node, 6)
            c7.fail(f"{ex.node} pid {ex.pid} (incarnation {ex.incarnation}) status {ex.returncode} at t={ex.t:.1f}s"
                    + (f" after {ex.expected}" if ex.expected else " (not stopped by the harness)"))
            for line in tail:
                c7.fail("    | " + line)
        crashed = {}
        for name, pid, t, line in self.cluster.crashes:
            crashed.setdefault((name, pid), (t, line))
        for (name, pid), (t, line) in crashed.items():
            c7.fail(f"{name} pid {pid} crashed at t={t:.1f}s: {line[:200]}")
        self.early_terms = []
        for ex in self.cluster.exits:
            if ex.expected in ("term", "final") and ex.returncode != 0:
                if ex.returncode == -signal.SIGTERM and ex.early:
                    # SIGTERM before the process had even logged "starting": its signal
                    # handling was not set up yet, so the default action ended it. Not the
                    # graceful path at all; noted, not counted as a failure.
                    self.early_terms.append(ex)
                    continue
                c7.fail(f"{ex.node} pid {ex.pid}: graceful stop ({ex.expected}) exited with status {ex.returncode}")
        self.checks.append(c7)

        c8 = Check(8, "`syncctl status --json` says in sync on every node")
        if self.settle_time is None and self.settle_reason and self.settle_reason[1] == "status":
            t, _, why = self.settle_reason
            c8.fail(f"not in sync for {self.cfg.settle_hold:g} s within the {self.cfg.settle_timeout:g} s settle timeout; "
                    f"the last poll that disagreed, at t={t:.1f}s: {why}")
        for name in names:
            s = self.statuses.get(name)
            if s is None:
                c8.fail(f"{name}: no answer from `syncctl status`")
            elif not self.status_ok(s):
                c8.fail(f"{name}: inSync={s.get('inSync')} peers={len(s.get('peers', []))} "
                        f"caughtUp={sum(1 for p in s.get('peers', []) if p.get('caughtUp'))} "
                        f"pulling={s.get('pulling')} failed={s.get('failed')}")
        self.checks.append(c8)

    def log_tail(self, node_name: str, lines: int) -> list[str]:
        try:
            text = (self.workdir / "logs" / f"{node_name}.log").read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [l[:240] for l in text if "### harness" not in l][-lines:]

    # ---- report

    def report(self, ok: bool) -> None:
        wl, cl = self.workload, self.cluster
        ops = ", ".join(f"{k} {wl.ops[k]}" for k in OP_WEIGHTS if wl.ops[k])
        skipped = ", ".join(f"{k} {v}" for k, v in wl.skipped.items())
        live = sum(1 for f in wl.files.values() if f.status == "live")
        gone = len(wl.files) - live
        log(f"  operations: {ops} ({sum(wl.ops.values())} in all; {wl.offline_ops} made on a stopped node"
            + (f"; skipped for want of a target: {skipped}" if skipped else "") + ")")
        log(f"  kills {cl.counts['kills']}, graceful stops {cl.counts['terms']}, restarts {cl.counts['restarts']}, "
            f"link cuts {wl.ops['cut']}, heals {wl.ops['heal']}, proxied {cl.proxies.bytes / 1e6:.1f} MB")
        log(f"  files: {live} live, {gone} deleted or renamed away, {wl.hot_counter} hot writes, "
            f"{len(self.conflict_copies)} conflict copies")
        log(f"  settle: " + (f"{self.settle_time:.1f} s" if self.settle_time is not None
                            else f"NOT settled within {self.cfg.settle_timeout:g} s"))
        if self.settle_reason and (self.settle_time is None or self.settle_time > 10):
            # What held the agreement up last: for a slow settle, the place to look.
            t, _, why = self.settle_reason
            log(f"    (the last poll that disagreed, at t={t:.1f}s: {why})")
        passed = sum(1 for c in self.checks if c.ok)
        for c in self.checks:
            log(f"  [{'PASS' if c.ok else 'FAIL'}] {c.number}. {c.title}")
            for d in c.details[:40]:
                log(f"         {d}")
        if self.conflict_copies:
            log(f"  (conflict copies: {short_list(self.conflict_copies, 6)})")
        for ex in self.early_terms:
            log(f"  (note: {ex.node} pid {ex.pid} got its SIGTERM before it had logged anything, and died of it "
                f"(status {ex.returncode}): a stop during start-up, counted as a kill)")
        if not ok:
            log(f"  seed {self.seed} FAILED: {passed} of {len(self.checks)} checks held")
            log(f"  replay: {self.replay_command()}")
            log(f"  work directory kept: {self.workdir} (logs/nN.log per node, harness.log)")
            if self.resurrected:
                self.diagnose()
        else:
            log(f"  seed {self.seed} passed: {passed} of {len(self.checks)} checks held")

    def fmt_record(self, rec, id2name) -> str:
        if not isinstance(rec, dict):
            return rec or "no record"
        epoch0 = self.timeline.epoch0
        vv = ", ".join(f"{id2name.get(nid[:7], nid[:7])}:{v}"
                       + (f"(t~{v - epoch0:.0f}s)" if v > 1_000_000_000 else "")
                       for nid, v in rec["version"])
        by = id2name.get(rec["modified_by"][:7], rec["modified_by"][:7])
        return (f"{'TOMBSTONE' if rec['deleted'] else 'file'} v={{{vv}}} by={by} "
                f"size={rec['size']} seq={rec['sequence']}")

    def diagnose(self) -> None:
        """Evidence for every resurrected path: each node's index record of it (read after the
        final graceful stop, so flushed); the nodes whose counters appear in a surviving
        version although the harness never wrote the path there ("suspects"); for each, its
        kills and restarts, what its index held for the path when it started again (the copy
        taken just before the start), and its log lines about the path in order; then every
        node's log lines that name the path."""
        cl, wl = self.cluster, self.workload
        id2name = {n.node_id[:7]: n.name for n in cl.nodes if n.node_id}
        epoch0 = self.timeline.epoch0
        log("")
        log("  ---- evidence for the resurrected paths ----")
        log("  (version counters are floored at wall-clock seconds, so a counter value tells about")
        log("  when it was made: shown as t~ on this run's clock; log lines carry the harness clock")
        log("  in seconds, taken when the harness read the line, then the daemon's own line)")
        for fm, holders in self.resurrected[:10]:
            p = fm.path
            log(f"  path {p}")
            log(f"    harness: {fm.how} on {fm.node} at t={fm.t:.3f}s; "
                + (f"deleted on {fm.gone_node}" if fm.status == "deleted" else f"renamed to {fm.renamed_to} on {fm.gone_node}")
                + f" at t={fm.gone_t:.3f}s" + (" (node down)" if fm.gone_offline else ""))
            log(f"    now on: {short_list(holders, 12)}")
            log("    index records after the run:")
            suspects: dict[str, int] = {}
            tombstones = 0
            for node in cl.nodes:
                rec = read_index_record(node.folder / STATE_DIR / "index.db", p)
                log(f"      {node.name:>4}: {self.fmt_record(rec, id2name)}")
                if isinstance(rec, dict):
                    tombstones += rec["deleted"]
                    if not rec["deleted"]:
                        for nid, v in rec["version"]:
                            nm = id2name.get(nid[:7], nid[:7])
                            if not self.counter_explained(fm, nm, v):
                                suspects[nm] = max(suspects.get(nm, 0), v)
            others = sorted(x for x in suspects if x != fm.node)
            if others:
                log(f"    the surviving version carries counters of {', '.join(others)} that no operation of the")
                log(f"    harness explains (it wrote the path on {fm.node} only, and removed it on {fm.gone_node}).")
            if fm.node in suspects:
                log(f"    the surviving version carries a counter of {fm.node} (which wrote the file) made well after")
                log(f"    that write: {fm.node} counted the same content again as a new edit.")
            verdicts = [self.diagnose_suspect(fm, sname, counter, id2name)
                        for sname, counter in sorted(suspects.items())]
            if not suspects and tombstones == 0:
                log(f"    no tombstone is left and no unexplained counter: was the {fm.status[:-1]} on {fm.gone_node} never recorded?")
                # A pull job of the path running on that node when the harness removed it?
                racing = [h for h in self.grep_log(fm.gone_node, p, harness=False)
                          if fm.gone_t - 0.5 <= float(h.split()[0]) <= fm.gone_t + 2 and ("failed" in h or "pulled" in h)]
                if racing:
                    log(f"    {fm.gone_node}'s own lines about it right after the {fm.status[:-1]} (a pull of it was in flight there):")
                    for h in racing[:5]:
                        log(f"      {h}")
                    if any("vanished right after it was written" in h for h in racing):
                        verdicts.append(f"the {fm.status[:-1]} on {fm.gone_node} hit a pull of the path that had just renamed it into "
                                        f"place; the pull failed ('vanished right after it was written'), was retried and "
                                        f"wrote the file again, and the {fm.status[:-1]} was never recorded")
            gone = next(n for n in cl.nodes if n.name == fm.gone_node)
            if not suspects:
                evts = [(t, k, f) for t, k, f in self.timeline.events
                        if f.get("node") == gone.name and k in ("signal", "exit", "start") and t > fm.gone_t - 2]
                if evts:
                    log(f"    {gone.name} (where the path was {fm.status}) after that:")
                    for t, k, f in evts[:6]:
                        log(f"      t={t:8.3f} {k} " + " ".join(f"{a}={b}" for a, b in f.items() if a != "node"))
            if not verdicts:
                verdicts.append("unclassified")
            self.verdicts.append((p, verdicts))
            log(f"    VERDICT: " + "; ".join(verdicts))
            log("    log lines naming the path, per node:")
            for node in cl.nodes:
                hits = self.grep_log(node.name, p)
                if hits:
                    log(f"      {node.name}:")
                    for h in hits[:12]:
                        log(f"        {h}")
                    if len(hits) > 12:
                        log(f"        ... {len(hits) - 12} more")
            log("")

    def counter_explained(self, fm: FileModel, name: str, counter: int) -> bool:
        """True when a counter of node `name` in a surviving version of `fm.path` is explained
        by what the harness did: the write of the file on that node, or its delete/rename
        there (the tombstone's counter, which a later version may descend from); each at the
        time of the operation or, when the node was down then, at its next start; plus two
        seconds for the flooring to seconds and scan delays."""
        if counter < 1_000_000_000:
            return name in (fm.node, fm.gone_node)
        t_c = counter - self.timeline.epoch0

        def when(t: float, offline: bool) -> float:
            if not offline:
                return t
            nxt = [x for x, k, f in self.timeline.events if k == "start" and f.get("node") == name and x >= t]
            return nxt[0] if nxt else t

        if name == fm.node and t_c <= when(fm.t, fm.made_offline) + 2.0:
            return True
        if name == fm.gone_node and t_c <= when(fm.gone_t, fm.gone_offline) + 2.0:
            return True
        return False

    def diagnose_suspect(self, fm: FileModel, sname: str, counter: int, id2name) -> str:
        """Prints the evidence about one node whose counter is in the surviving version and
        returns a one-line verdict on how that counter came to be."""
        cl = self.cluster
        verdict = f"{sname} counted it as its own edit; no restart explains it (unclassified)"
        node = next((n for n in cl.nodes if n.name == sname), None)
        if node is None:
            return verdict
        epoch0 = self.timeline.epoch0
        t_counter = counter - epoch0 if counter > 1_000_000_000 else None
        evts = [(t, k, f) for t, k, f in self.timeline.events
                if f.get("node") == sname and k in ("signal", "exit", "start")]
        log(f"    {sname}: counter {counter}" + (f" (made at t~{t_counter:.1f}s, floored to a second)" if t_counter is not None else ""))
        starts = [(t, f["incarnation"]) for t, k, f in evts if k == "start"]
        # The incarnation that made the counter: the last start before it (one second of slack
        # for the flooring).
        inc = None
        if t_counter is not None:
            for t, k in starts:
                if t <= t_counter + 1.0:
                    inc = (t, k)
        if inc and inc[1] > 1:
            t_start, k = inc
            copy = self.workdir / "index-at-start" / f"{sname}.{k}" / "index.db"
            rec = read_index_record_copy(copy, fm.path)
            kills = [(t, f) for t, kk, f in evts if kk == "signal" and t < t_start]
            last_kill = kills[-1] if kills else None
            log(f"      made by incarnation {k}, started at t={t_start:.3f}s"
                + (f" after a {last_kill[1]['sig']} at t={last_kill[0]:.3f}s" if last_kill else ""))
            log(f"      its index when it started again held: {self.fmt_record(rec, id2name)}")
            intent = read_index_record_copy(copy, fm.path, "intents")
            if isinstance(intent, dict):
                log(f"      and a pull intent for it: {self.fmt_record(intent, id2name)}")
            sig = last_kill[1]["sig"] if last_kill else "start"
            own = "its own file" if sname == fm.node else "a pulled file"
            if isinstance(rec, str) and rec.startswith("no record"):
                verdict = (f"{sname} restarted after a {sig} at t={last_kill[0] if last_kill else t_start:.1f}s with {own} on disk "
                           f"but no record of it in its index; its start-up scan counted the file as a new edit")
            elif isinstance(rec, dict):
                verdict = (f"{sname} restarted after a {sig} with {own} on disk whose content its index did not "
                           f"describe ({'a tombstone' if rec['deleted'] else 'an older version'}); its start-up scan counted it as a new edit")
            if last_kill:
                # Lines of the stopped process: read before its exit was recorded (the exit
                # watcher waits for the end of the output), so written before it died.
                exit_t = next((t for t, kk, f in evts if kk == "exit" and t >= last_kill[0]), last_kill[0] + 5)
                killed_start = max((t for t, _ in starts if t < last_kill[0]), default=0.0)
                before = [h for h in self.grep_log(sname, fm.path)
                          if killed_start <= float(h.split()[0]) <= exit_t]
                if before:
                    t_last = float(before[-1].split()[0])
                    what = before[-1].split(None, 1)[1]
                    what = "the harness wrote it (" + what.split("### harness: ", 1)[1] + ")" if "### harness" in what else \
                        ("it logged " + re.sub(r".*(sync\.op=\S+).*\[SyncKit\] (\w+)", r"'\2' \1", what))
                    delta = (t_last - last_kill[0]) * 1000
                    log(f"      the last thing about the path before that stop: {what}, at t={t_last:.3f}s, "
                        + (f"{-delta:.0f} ms before the {last_kill[1]['sig']}" if delta <= 0 else
                           f"read {delta:.0f} ms after the {last_kill[1]['sig']} was sent (so written just before it)"))
        log(f"      {sname}'s stops, starts and lines about the path, in order:")
        lines = []
        for t, k, f in evts:
            lines.append((t, f"### {k} " + " ".join(f"{a}={b}" for a, b in f.items() if a != "node")))
        for h in self.grep_log(sname, fm.path, harness=False) + self.grep_log(sname, "[SyncKit] starting", plain=True):
            try:
                lines.append((float(h.split()[0]), h.split(None, 1)[1]))
            except (ValueError, IndexError):
                pass
        for t, text in sorted(lines, key=lambda x: x[0])[:30]:
            log(f"        {t:9.3f} {text[:200]}")
        return verdict

    def grep_log(self, node_name: str, needle: str, harness: bool = True, plain: bool = False) -> list[str]:
        """Lines of a node's log about a path (`sync.path=`/`sync.copy=` fields and the harness's
        own markers), or, with `plain`, every line containing `needle`."""
        out = []
        if plain:
            pat = re.compile(re.escape(needle))
        else:
            pat = re.compile(r"(sync\.path|sync\.copy)=" + re.escape(needle) + r"(\s|$)"
                             + (r"|### harness: .*" + re.escape(needle) if harness else ""))
        try:
            with open(self.workdir / "logs" / f"{node_name}.log", errors="replace") as f:
                for line in f:
                    if needle in line and pat.search(line):
                        line = re.sub(r" node=\S+ node\.id=[A-Z2-7-]{52,63}", "", line.rstrip())
                        line = re.sub(r" \d{4}-\d\d-\d\dT(\d\d:\d\d:\d\d)\S* ", r" \1 ", line)
                        out.append(line[:260])
        except OSError:
            pass
        return out


# ---------------------------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------------------------

def find_syncctl() -> str | None:
    env = os.environ.get("SYNCCTL")
    if env:
        return env
    for p in (REPO / ".build-release" / "release" / "syncctl", REPO / ".build" / "release" / "syncctl",
              REPO / ".build" / "debug" / "syncctl"):
        if p.exists():
            return str(p)
    return None


def verdict_kind(verdicts: list[str]) -> str:
    """A short class for a resurrected path's verdicts, for the summary."""
    text = " ".join(verdicts)
    if "a pulled file on disk but no record" in text:
        return "pulled file, record lost to a kill"
    if "its own file on disk but no record" in text:
        return "own new file, record lost to a kill"
    if "did not describe" in text:
        return "stale record after a restart"
    if "vanished right after it was written" in text:
        return "delete raced a pull"
    return "other"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="Seeded chaos test for SyncKit: real `syncctl run` daemons under kills, link cuts "
                    "and file churn, then invariants.")
    ap.add_argument("--nodes", type=int, help="number of daemons (at least 8; default 12)")
    ap.add_argument("--duration", type=float, help="seconds of churn per seed (default 45)")
    ap.add_argument("--settle-timeout", type=float, help="seconds to wait for agreement (default 120)")
    ap.add_argument("--settle-hold", type=float, default=4.0,
                    help="seconds the agreement must hold before the checks (default 4)")
    ap.add_argument("--seed", type=int, help="first seed (default: a random one, printed)")
    ap.add_argument("--seeds", type=int, help="how many seeds to run in sequence (default 1)")
    ap.add_argument("--ci", action="store_true", help="CI mode: 3 seeds x 20 s churn, 8 nodes")
    ap.add_argument("--long", action="store_true", help="long mode: 10 seeds x 60 s churn, 12 nodes")
    ap.add_argument("--op-interval", type=float, default=0.12, help="mean pause between operations, s (default 0.12)")
    ap.add_argument("--max-down", type=int, help="most nodes stopped at once (default nodes/3)")
    ap.add_argument("--offline-removes", choices=["never", "graceful", "always"], default="graceful",
                    help="deletes/renames on a stopped node: never, only after a clean graceful stop "
                         "(default), or also after a SIGKILL")
    ap.add_argument("--log-level", default="debug", help="the daemons' --log-level (default debug: pulls are logged)")
    ap.add_argument("--syncctl", help="the syncctl binary (default: $SYNCCTL, else the first of .build-release/release, "
                                           ".build/release, .build/debug in the repo)")
    ap.add_argument("--workdir", help="where to make the work directories (default: the system temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory even when the seed passes")
    ap.add_argument("--fail-fast", action="store_true", help="stop at the first failing seed")
    a = ap.parse_args(argv)
    if a.ci and a.long:
        ap.error("--ci and --long exclude each other")
    mode = {"nodes": 12, "duration": 45.0, "settle_timeout": 120.0, "seeds": 1}
    if a.ci:
        mode = {"nodes": 8, "duration": 20.0, "settle_timeout": 60.0, "seeds": 3}
    if a.long:
        mode = {"nodes": 12, "duration": 60.0, "settle_timeout": 150.0, "seeds": 10}
    for k, v in mode.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.nodes < 8:
        ap.error("--nodes must be at least 8")
    if a.max_down is None:
        a.max_down = max(2, a.nodes // 3)
    a.syncctl = a.syncctl or find_syncctl()
    if not a.syncctl or not os.access(a.syncctl, os.X_OK):
        ap.error("no syncctl binary: build it (swift build --product syncctl) or pass --syncctl")
    a.syncctl = str(Path(a.syncctl).resolve())
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1, 1_000_000)
    return a


async def amain(cfg) -> int:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    st = os.stat(cfg.syncctl)
    with open(cfg.syncctl, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()[:16]
    # Which binary ran matters when Sources change under a running investigation.
    log(f"syncctl: {cfg.syncctl} (modified {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(st.st_mtime))}, "
        f"sha256 {digest})")
    log(f"seeds {cfg.seed}..{cfg.seed + cfg.seeds - 1}, {cfg.nodes} nodes, {cfg.duration:g} s churn each, "
        f"settle timeout {cfg.settle_timeout:g} s")
    results = []
    started = time.monotonic()
    try:
        for k in range(cfg.seeds):
            seed = cfg.seed + k
            t = time.monotonic()
            run = SeedRun(cfg, seed)
            try:
                ok = await run.run()
            except Exception:
                await Children.kill_all()
                log(f"  seed {seed}: harness error; work directory kept: {run.workdir}")
                raise
            results.append((seed, ok, time.monotonic() - t, run))
            log(f"  seed {seed} took {time.monotonic() - t:.0f} s")
            if not ok and cfg.fail_fast:
                break
    finally:
        await Children.kill_all()
    failed = [s for s, ok, _, _ in results if not ok]
    log("")
    log(f"SUMMARY: {len(results)} seed(s) in {time.monotonic() - started:.0f} s, "
        f"{len(results) - len(failed)} passed, {len(failed)} failed"
        + (f" (seeds {', '.join(map(str, failed))})" if failed else ""))
    for seed, ok, dur, run in results:
        held = sum(1 for c in run.checks if c.ok)
        bad = [str(c.number) for c in run.checks if not c.ok]
        settle = f"{run.settle_time:.1f} s" if run.settle_time is not None else "timeout"
        log(f"  seed {seed}: {'PASS' if ok else 'FAIL'} {held}/{len(run.checks)} checks"
            + (f" (failed: {', '.join(bad)})" if bad else "")
            + f", {sum(run.workload.ops.values())} ops, {run.cluster.counts['kills']} kills, settle {settle}")
        if run.resurrected:
            kinds = collections.Counter(verdict_kind(v) for _, v in run.verdicts)
            log(f"      {len(run.resurrected)} resurrected path(s): "
                + ", ".join(f"{k} {n}" for k, n in kinds.most_common())
                + (f" (first {len(run.verdicts)} diagnosed)" if len(run.verdicts) < len(run.resurrected) else ""))
    return 1 if failed else 0


def main(argv=None) -> int:
    cfg = parse_args(argv)
    try:
        return asyncio.run(amain(cfg))
    except (KeyboardInterrupt, asyncio.CancelledError):
        Children.kill_all_sync()
        log("interrupted: every daemon was stopped; work directories are kept")
        return 130


if __name__ == "__main__":
    sys.exit(main())
