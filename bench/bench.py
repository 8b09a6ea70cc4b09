#!/usr/bin/env python3
"""SyncKit against Syncthing, same workloads, same machine, same run.

Usage (as root; see bench/run.sh, which also builds syncctl and installs Syncthing):
    python3 bench/bench.py --syncctl PATH [--runs 3] [--quick] [--workloads 1,2,3,4,5,8,6,7,9]
                           [--tools synckit,synckit-plain,syncthing,syncthing-1s] [--markdown OUT]
                           [--w6-files 1000000] [--w6-deadline 3600] [--w9-files 5000] [--w9-deadline 600]
    (synckit runs over TLS, as a user runs it; synckit-plain is the same with --insecure-plaintext,
    to measure what TLS costs; synckit-before and synckit-before-plain run the binary given by
    --syncctl-before, for before/after figures of a change in one run; mixed-serve and mixed-pull
    are mixed clusters, one syncctl node speaking BEP with three Syncthings: in mixed-serve the
    syncctl node is node 0, where the workloads write, so it serves the Syncthings; in mixed-pull
    it is node 3 and pulls from them. Their -1s forms run the Syncthings with a 1 s watcher delay,
    to compare with syncthing-1s)

Everything runs inside a fresh network namespace that has only `lo` (the script re-executes
itself under `unshare -n`), so no packet leaves the machine, and Syncthing's discovery, relays,
NAT, usage reporting, crash reporting and upgrades are all off in its config before it starts.
Each tool runs a 4-node full mesh on 127.0.0.1 (workloads 6 and 9: 2 nodes, workload 7: 16); a workload
is timed until every node's folder is byte-identical (SHA-256 of every file), polling the file
system. Per workload and tool we record wall time, CPU time of the node processes, peak RSS per
node (VmHWM) and bytes on `lo`. Workload 6 (a million 1 KiB files, --w6-files, to one empty peer)
also records the machine's floor for reading the tree (tar), node 0's first scan alone, both
indexes on disk, a restart with nothing changed and one new file's latency; workload 7 (sixteen
nodes, 100 x 16 KiB each, time to union) also records one new file's latency to the 15 others.
Workload 9 (a directory move: moveme/, 5,000 files of 1 KiB, --w9-files, renamed to
moved/into/here on node 0) records the time until node 1 holds the new layout, the bytes on lo,
each node's CPU, and the fraction of node 1's files that kept their inode (1: applied as renames).
The quick mode (CI) runs each workload once at small size and checks convergence, not time.
"""
import argparse, hashlib, json, os, random, shutil, signal, statistics, subprocess, sys, tempfile, time
import xml.etree.ElementTree as ET

NODES = 4  # the cluster size of workloads 1-5 and 8 (Cluster's default)

# ---------------------------------------------------------------- helpers

def lo_bytes():
    with open("/proc/net/dev") as f:
        for line in f:
            if line.strip().startswith("lo:"):
                fields = line.split(":")[1].split()
                return int(fields[8])  # transmitted bytes (each byte crosses lo once)
    return 0

def proc_cpu(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0

def proc_hwm_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0

def proc_read_bytes(pid):
    """Bytes the process read with read(2) and friends (rchar in /proc/PID/io: files, its
    database and sockets alike)."""
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None

IGNORED_PREFIXES = (".synckit", ".stfolder", ".stversions", ".syncthing.", "~syncthing~")

class Digest:
    """Content digests of folders, hashing a file again only when its size or mtime changed."""
    def __init__(self):
        self.cache = {}
        self.laggard = 0  # the folder that failed the last check (laggard_first)

    def folder(self, root):
        out = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(IGNORED_PREFIXES)]
            for name in filenames:
                if name.startswith(IGNORED_PREFIXES) or name.endswith(".synckit-tmp"):
                    return None  # a transfer in progress: not converged
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                except OSError:
                    return None
                key = (path, st.st_size, st.st_mtime_ns)
                digest = self.cache.get(key)
                if digest is None:
                    h = hashlib.sha256()
                    with open(path, "rb") as f:
                        while chunk := f.read(1 << 20):
                            h.update(chunk)
                    digest = self.cache[key] = h.hexdigest()
                out[os.path.relpath(path, root)] = digest
        return out

    def converged(self, roots, expect_files=None, laggard_first=False):
        # Cheapest first, so that polling steals as little CPU as possible from the tools being
        # measured: names only (readdir, no stat), then sizes, then content hashes.
        # laggard_first: list first the folder that failed the last check, which most likely
        # still lags (with sixteen folders a check then lists one or two, not up to sixteen).
        order = list(range(len(roots)))
        if laggard_first and self.laggard < len(roots):
            order.insert(0, order.pop(self.laggard))
        names = []
        for k in order:
            n = list_names(roots[k])
            if n is None or (expect_files is not None and len(n) != expect_files) or (names and n != names[0]):
                self.laggard = k
                return False
            names.append(n)
        sizes = []
        for r in roots:
            try:
                sizes.append({p: os.stat(os.path.join(r, p)).st_size for p in names[0]})
            except OSError:
                return False
        if any(s != sizes[0] for s in sizes):
            return False
        # Every node holds the same names and sizes now; if the contents match too, this is the
        # moment of convergence (hashing tens of thousands of files takes seconds, which must not
        # count against the tool being measured).
        seen = time.monotonic()
        digests = [self.folder(r) for r in roots]
        return seen if all(d is not None and d == digests[0] for d in digests) else False

def list_names(root):
    """Relative paths of the regular files under root, from readdir alone (None: a transfer in
    progress is visible)."""
    out, stack = set(), [""]
    while stack:
        rel = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, rel)))
        except OSError:
            return None
        for e in entries:
            if e.name.startswith(IGNORED_PREFIXES):
                continue
            if e.name.endswith(".synckit-tmp"):
                return None
            p = os.path.join(rel, e.name) if rel else e.name
            if e.is_dir(follow_symlinks=False):
                stack.append(p)
            else:
                out.add(p)
    return out

def write_file(path, size, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, 1 << 20)
            f.write(rnd.randbytes(n))
            left -= n

# ---------------------------------------------------------------- the tools

class Cluster:
    """A running cluster of one tool: `nodes` nodes (4 unless a workload asks otherwise), each
    listing every other as a peer. Node i listens on 22101+i (Syncthing, and syncctl in a mixed
    cluster) or 22201+i (synckit); a Syncthing's GUI is on 8385+i, a syncctl's on a free port."""
    def __init__(self, tool, root, args, nodes=NODES):
        self.tool, self.root, self.args, self.nodes = tool, root, args, nodes
        self.dirs = [os.path.join(root, f"n{i}") for i in range(nodes)]
        self.procs = [None] * nodes  # a node not started (yet) is None
        self.api_keys = {}

    def prepare(self):
        for d in self.dirs:
            os.makedirs(d, exist_ok=True)
        if not self.tool.startswith("synckit"):
            self.prepare_syncthing()

    def is_syncctl(self, i):
        """Node i runs syncctl: every node of a synckit tool, one node of a mixed one."""
        if self.tool.startswith("synckit"):
            return True
        if self.tool.startswith("mixed-serve"):
            return i == 0
        if self.tool.startswith("mixed-pull"):
            return i == self.nodes - 1
        return False

    def start(self):
        self.procs = [self.launch(i) for i in range(self.nodes)]

    def binary(self):
        """The syncctl this tool runs: --syncctl-before for synckit-before*, --syncctl-between
        for synckit-between* (a third build, for A/B/C runs), else --syncctl."""
        if self.tool.startswith("synckit-before"):
            return self.args.syncctl_before
        if self.tool.startswith("synckit-between"):
            return self.args.syncctl_between
        return self.args.syncctl

    def launch(self, i):
        """Starts node i of the tool and returns its process."""
        if self.tool.startswith("mixed") and self.is_syncctl(i):
            # A syncctl node in a Syncthing cluster: BEP to every Syncthing, trusted by ID.
            cmd = [self.args.syncctl, "run", "--dir", self.dirs[i], "--port", str(22101 + i), "--bind", "127.0.0.1",
                   "--name", f"n{i}", "--log", "stderr", "--log-level", os.environ.get("BENCH_LOG_LEVEL", "warning"),
                   "--discovery", "static", "--folder-id", "bench", "--gui-address", "127.0.0.1:0"]
            for j in range(self.nodes):
                if j != i:
                    cmd += ["--peer", f"127.0.0.1:{22101 + j}", "--trust", self.ids[j]]
            log = open(os.path.join(self.root, f"n{i}.log"), "ab")
            return subprocess.Popen(cmd, stdout=log, stderr=log)
        if self.tool.startswith("synckit"):
            ports = [22201 + k for k in range(self.nodes)]
            binary = self.binary()
            cmd = [binary, "run", "--dir", self.dirs[i], "--port", str(ports[i]), "--bind", "127.0.0.1",
                   "--name", f"n{i}", "--log", "stderr", "--log-level", os.environ.get("BENCH_LOG_LEVEL", "warning"),
                   # A free port for each node's GUI: with the default 8384 only the first
                   # node would serve one (sixteen nodes would race for it).
                   "--gui-address", "127.0.0.1:0"]
            for j in range(self.nodes):
                if j != i:
                    cmd += ["--peer", f"127.0.0.1:{ports[j]}"]
            # synckit-plain: the same nodes without TLS, to measure what encryption costs.
            if self.tool.endswith("-plain"):
                cmd += ["--insecure-plaintext"]
            # How many records a table keeps in memory before it spills to SQLite (quick
            # workload 6 sets it low, so CI runs the spilled index end to end).
            if getattr(self, "memory_records", None) is not None and not self.tool.startswith("synckit-before"):
                cmd += ["--memory-records", str(self.memory_records)]
            log = open(os.path.join(self.root, f"n{i}.log"), "ab")
            env = dict(os.environ, SYNCKIT_CLUSTER_KEY="bench-key")
            return subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        home = os.path.join(self.root, f"st{i}")
        log = open(os.path.join(self.root, f"st{i}.log"), "ab")
        # STMONITORED: run the worker directly, without Syncthing's restart monitor, so the
        # process measured is the one doing the work.
        return subprocess.Popen(
            ["syncthing", "serve", f"--home={home}", "--no-browser", "--no-restart", "--no-upgrade"],
            stdout=log, stderr=log, env=dict(os.environ, STNOUPGRADE="1", STNODEFAULTFOLDER="1", STMONITORED="1"))

    def stop_node(self, i):
        p = self.procs[i]
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def start_node(self, i):
        self.procs[i] = self.launch(i)

    def wait_back_in_sync(self, i, deadline_s, adaptive=False):
        """The time at which node i reports itself connected to every peer (nodes - 1 of them)
        and in sync (None at the deadline): `syncctl status --json`, or Syncthing's REST API.
        Every 50 ms; adaptive: less often when a status costs more (a daemon walks its whole
        index to answer, a million records in workload 6), so that polling takes at most a fifth
        of the time, but never more than a twentieth of the time waited so far (as poll())."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < deadline_s:
            t = time.monotonic()
            if self.node_in_sync(i):
                return time.monotonic()
            now = time.monotonic()
            time.sleep(max(0.05, min(4 * (now - t), (now - t0) / 20)) if adaptive else 0.05)
        return None

    def node_in_sync(self, i):
        if self.is_syncctl(i):
            st = self.syncctl_status(i)
            if st is None:
                return False
            return st.get("inSync") and len(st.get("peers", [])) == self.nodes - 1 and all(p.get("caughtUp") for p in st["peers"])
        get = lambda path: self.st_get(i, path)
        try:
            conns = get("/rest/system/connections")["connections"]
            if sum(1 for c in conns.values() if c.get("connected")) < self.nodes - 1:
                return False
            status = get("/rest/db/status?folder=bench")
            completion = [get(f"/rest/db/completion?folder=bench&device={d}")["completion"] for d in conns]
            return status.get("state") == "idle" and status.get("needTotalItems", 1) == 0 and all(x == 100 for x in completion)
        except Exception:
            return False

    def st_get(self, i, path):
        """GET `path` from Syncthing node i's REST API (JSON); raises when it does not answer."""
        import urllib.request
        key = self.api_keys.get(i)
        if key is None:
            home = os.path.join(self.root, f"st{i}")
            key = self.api_keys[i] = ET.parse(os.path.join(home, "config.xml")).getroot().find("gui/apikey").text
        req = urllib.request.Request(f"http://127.0.0.1:{8385 + i}{path}", headers={"X-API-Key": key})
        with urllib.request.urlopen(req, timeout=2) as r:
            return json.loads(r.read())

    def syncctl_status(self, i):
        """`syncctl status --json` of syncctl node i (None: no daemon answers yet)."""
        binary = self.binary() if self.tool.startswith("synckit") else self.args.syncctl
        out = subprocess.run([binary, "status", "--dir", self.dirs[i], "--json"], capture_output=True, text=True)
        if out.returncode != 0:
            return None
        try:
            return json.loads(out.stdout)
        except ValueError:
            return None

    def stop(self):
        for p in self.procs:
            if p is not None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            if p is None:
                continue
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = [None] * self.nodes

    def cpu(self):
        return sum(self.cpu_per_node())

    def cpu_per_node(self):
        return [round(proc_cpu(p.pid), 2) if p else 0.0 for p in self.procs]

    def peak_rss(self):
        return max(self.rss_per_node())

    def rss_per_node(self):
        """Peak RSS of each node (VmHWM, MiB): in a mixed cluster, which kind of node it was."""
        return [round(proc_hwm_mib(p.pid), 1) if p else 0.0 for p in self.procs]

    def prepare_syncthing(self):
        ids = []
        for i in range(self.nodes):
            if self.is_syncctl(i):
                out = subprocess.run([self.args.syncctl, "id", "--dir", self.dirs[i]], check=True,
                                     capture_output=True, text=True).stdout.splitlines()[0].strip()
                ids.append(out)
                continue
            home = os.path.join(self.root, f"st{i}")
            subprocess.run(["syncthing", "generate", f"--home={home}", "--no-default-folder"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            out = subprocess.run(["syncthing", "serve", f"--home={home}", "--device-id"], check=True,
                                 capture_output=True, text=True).stdout.strip()
            ids.append(out)
        self.ids = ids
        delay = "1" if self.tool.endswith("-1s") else "10"
        for i in range(self.nodes):
            if self.is_syncctl(i):
                continue
            home = os.path.join(self.root, f"st{i}")
            path = os.path.join(home, "config.xml")
            tree = ET.parse(path)
            cfg = tree.getroot()
            for el in cfg.findall("folder") + cfg.findall("device"):
                cfg.remove(el)
            folder = ET.SubElement(cfg, "folder", {
                "id": "bench", "label": "bench", "path": self.dirs[i], "type": "sendreceive",
                "rescanIntervalS": "3600", "fsWatcherEnabled": "true", "fsWatcherDelayS": delay,
                "ignorePerms": "false", "autoNormalize": "true"})
            ET.SubElement(folder, "maxConflicts").text = "10"
            for j in range(self.nodes):
                ET.SubElement(folder, "device", {"id": ids[j], "introducedBy": ""})
            for j in range(self.nodes):
                dev = ET.SubElement(cfg, "device", {"id": ids[j], "name": f"n{j}", "compression": "metadata",
                                                    "introducer": "false", "skipIntroductionRemovals": "false", "introducedBy": ""})
                ET.SubElement(dev, "address").text = f"tcp://127.0.0.1:{22101 + j}"
                ET.SubElement(dev, "autoAcceptFolders").text = "false"
            gui = cfg.find("gui")
            if gui is not None:
                gui.set("enabled", "true")
                gui.set("tls", "false")
                addr = gui.find("address")
                if addr is None:
                    addr = ET.SubElement(gui, "address")
                addr.text = f"127.0.0.1:{8385 + i}"
            opts = cfg.find("options")
            def setopt(name, value):
                for el in opts.findall(name):
                    opts.remove(el)
                ET.SubElement(opts, name).text = value
            setopt("listenAddress", f"tcp://127.0.0.1:{22101 + i}")
            for name, value in [("globalAnnounceEnabled", "false"), ("localAnnounceEnabled", "false"),
                                ("relaysEnabled", "false"), ("natEnabled", "false"), ("urAccepted", "-1"),
                                ("urSeen", "3"), ("autoUpgradeIntervalH", "0"), ("crashReportingEnabled", "false"),
                                ("startBrowser", "false"), ("announceLANAddresses", "false")]:
                setopt(name, value)
            tree.write(path)
            os.makedirs(os.path.join(self.dirs[i], ".stfolder"), exist_ok=True)

# ---------------------------------------------------------------- workloads

def wait(cluster, digest, expect, deadline_s, min_sleep=0.01, laggard_first=False):
    """The time at which every folder was seen identical, or None at the deadline."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        t = time.monotonic()
        seen = digest.converged(cluster.dirs, expect, laggard_first)
        if seen:
            return seen
        # Every 10 ms (min_sleep), or less often when a poll is expensive (tens of thousands of
        # files): the poller then takes at most a third of one core, and the error it adds stays
        # below three poll durations.
        time.sleep(max(min_sleep, 2 * (time.monotonic() - t)))
    return None

def wait_file(roots, rel, content, deadline_s, interval=0.005):
    """The time at which every folder in roots holds the file rel with exactly these bytes
    (None at the deadline). Every 5 ms: a stat per folder still without it, a read only when
    the size is right; a folder that had it is not looked at again."""
    t0 = time.monotonic()
    pending = list(roots)
    while time.monotonic() - t0 < deadline_s:
        for r in list(pending):
            path = os.path.join(r, rel)
            try:
                if os.stat(path).st_size != len(content):
                    continue
                with open(path, "rb") as f:
                    if f.read() == content:
                        pending.remove(r)
            except OSError:
                continue
        if not pending:
            return time.monotonic()
        time.sleep(interval)
    return None

DEFERRED = []

def poll(check, deadline_s, what, min_sleep=0.05, progress=None):
    """Calls check(), which returns (done, how far), until it is done: the time it said so
    (None at the deadline) and how far it got. Between checks it sleeps four times what a check
    took (at least min_sleep), so that polling takes at most a fifth of the time even when a
    check walks a million files or makes a daemon do so, but never more than a twentieth of the
    time waited so far: one slow check early on (the first exec of a cold 170 MB binary) would
    otherwise make a short phase's figure coarse. A progress line every minute (how far, or
    what progress() says)."""
    t0 = last = time.monotonic()
    far = None
    while time.monotonic() - t0 < deadline_s:
        t = time.monotonic()
        done, far = check()
        now = time.monotonic()
        if done:
            return now, far
        if now - last >= 60:
            last = now
            print(f"bench:   {what}: {progress() if progress else far} after {now - t0:.0f} s", file=sys.stderr, flush=True)
        time.sleep(max(min_sleep, min(4 * (now - t), (now - t0) / 20)))
    return None, far

W6_LEAVES = 1000  # workload 6's tree: d{0..31}/e{0..999}, 1,000 leaf directories

def w6_leaf(k):
    leaf = k % W6_LEAVES
    return f"d{leaf // 32}/e{leaf}"

def w6_seed(root, n, label):
    """n files of 1 KiB (distinct contents) under root, in workload 6's tree: plain writes, no
    fsync. Returns the number of files each leaf directory holds."""
    rnd = random.Random(6)
    t0 = time.monotonic()
    for k in range(n):
        leaf = w6_leaf(k)
        if k < W6_LEAVES:
            os.makedirs(os.path.join(root, leaf), exist_ok=True)
        with open(os.path.join(root, leaf, f"f{k}.bin"), "wb") as f:
            f.write(rnd.randbytes(1024))
        if (k + 1) % 100000 == 0 and k + 1 < n:
            print(f"bench: w6 {label}: seeded {k + 1:,} of {n:,} files ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
    print(f"bench: w6 {label}: seeded {n:,} files in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    return {w6_leaf(e): n // W6_LEAVES + (1 if e < n % W6_LEAVES else 0) for e in range(min(n, W6_LEAVES))}

def synced_name(name):
    return not name.startswith(IGNORED_PREFIXES) and not name.endswith(".synckit-tmp")

def w6_leaves_done(root, expected, pending):
    """Removes from pending the leaf directories of root that hold all their files (temp files
    of transfers in flight do not count): one listdir per leaf still pending, no stat."""
    for leaf in list(pending):
        try:
            names = os.listdir(os.path.join(root, leaf))
        except OSError:
            continue
        if len(names) >= expected[leaf] and sum(1 for x in names if synced_name(x)) >= expected[leaf]:
            pending.discard(leaf)

def w6_files_present(root, expected):
    n = 0
    for leaf in expected:
        try:
            n += sum(1 for x in os.listdir(os.path.join(root, leaf)) if synced_name(x))
        except OSError:
            pass
    return n

def index_bytes(c, i):
    """Bytes of node i's index on disk: syncctl's SQLite database with its WAL and shared
    memory files, or Syncthing's LevelDB directory (du -sb)."""
    if c.is_syncctl(i):
        base = os.path.join(c.dirs[i], ".synckit", "index.db")
        return sum(os.path.getsize(base + x) for x in ("", "-wal", "-shm") if os.path.exists(base + x))
    # Syncthing's LevelDB directory (du -sb).
    out = subprocess.run(["du", "-sb", os.path.join(c.root, f"st{i}", "index-v0.14.0.db")], capture_output=True, text=True)
    return int(out.stdout.split()[0]) if out.returncode == 0 else None

def syncthing_scanned_since(c, i, wall):
    """Syncthing node i finished a scan of the folder after the wall-clock time `wall` (its
    folder may report "idle" before the scan a start begins with)."""
    try:
        last = c.st_get(i, "/rest/stats/folder").get("bench", {}).get("lastScan", "")
    except Exception:
        return False
    import datetime, re
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", last or "")
    if not m:
        return False
    frac = (m.group(2) or ".0")[:7]
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.datetime.fromisoformat(m.group(1) + frac + tz).timestamp() >= wall

def run_w6(c, digest, args, scale, result):
    """Workload 6: a million files of 1 KiB (--w6-files) on node 0, in about 1,000 directories.
    Measured: the machine's floor (tar reading the tree), node 0's first scan alone, node 1's
    pull of everything, both indexes on disk, node 1's restart with nothing changed, and one
    new file's latency. Progress goes to stderr: a full run takes tens of minutes."""
    n, label = scale["w6_files"], c.tool
    long_deadline = args.deadline if args.quick else max(args.deadline, args.w6_deadline)
    # Quick mode: every syncctl table spills past 500 records (of 2,000 files), so the scan,
    # pull and restart run on the spilled index as a million files would; the full run keeps
    # the default limit (--w6-memory-records to change it).
    c.memory_records = args.w6_memory_records if args.w6_memory_records is not None else (500 if args.quick else None)
    d0, d1 = c.dirs
    expected = w6_seed(d0, n, label)
    result.update(nodes=2, files=n)
    # The floor: what it takes this machine to stat and read the whole tree (GNU tar does not
    # read the files when its output is /dev/null itself, hence the pipe).
    t = time.monotonic()
    subprocess.run(["sh", "-c", 'tar -cf - -C "$1" . | cat > /dev/null', "sh", d0], check=True)
    floor = time.monotonic() - t
    result.update(floor_s=round(floor, 3), floor_files_per_s=round(n / floor))
    print(f"bench: w6 {label}: floor (tar) {floor:.2f} s, {n / floor:,.0f} files/s", file=sys.stderr, flush=True)

    # a. Node 0 alone, its first scan: `syncctl status` says in sync (which a syncctl node
    # only says once its first full scan is done) with every file in its index; Syncthing's
    # folder is idle with every file in its database.
    def scanned():
        if c.is_syncctl(0):
            st = c.syncctl_status(0)
            files = st.get("files") if st else None
            return bool(st and st.get("inSync") and files == n), files
        try:
            st = c.st_get(0, "/rest/db/status?folder=bench")
        except Exception:
            return False, None
        return st.get("state") == "idle" and st.get("localFiles") == n, st.get("localFiles")
    t0 = time.monotonic()
    c.start_node(0)
    seen, far = poll(scanned, long_deadline, f"w6 {label} first scan, files in the index")
    p0 = c.procs[0].pid
    result.update(scan_s=seen - t0 if seen else None, scan_files_per_s=round(n / (seen - t0)) if seen else None,
                  scan_cpu=round(proc_cpu(p0), 2), scan_rss_mib=round(proc_hwm_mib(p0), 1), scan_read_bytes=proc_read_bytes(p0))
    if not seen:
        print(f"bench: w6 {label}: first scan not done after {long_deadline:.0f} s ({far} files indexed)", file=sys.stderr, flush=True)
        result.update(ok=False, scan_files_at_deadline=far, seconds=None)
        return
    print(f"bench: w6 {label}: first scan {seen - t0:.2f} s, {n / (seen - t0):,.0f} files/s, "
          f"{result['scan_cpu']} s CPU, {result['scan_rss_mib']} MiB", file=sys.stderr, flush=True)

    # b. Node 1 starts empty and pulls everything: done when every file is on its disk, by name
    # (leaf directories counted, each only until it is complete).
    cpu0, lo0, t1 = proc_cpu(p0), lo_bytes(), time.monotonic()
    c.start_node(1)
    pending = set(expected)
    def pulled():
        w6_leaves_done(d1, expected, pending)
        return not pending, f"{len(pending)} of {len(expected)} directories incomplete"
    # (Each minute the files on node 1 are counted, for the progress line: a tool that pulls in
    # random order completes its first directory late.)
    seen, far = poll(pulled, long_deadline, f"w6 {label} pull",
                     progress=lambda: f"{w6_files_present(d1, expected):,} of {n:,} files on node 1, "
                                      f"{len(pending)} of {len(expected)} directories incomplete")
    pull_lo = lo_bytes() - lo0
    pull_cpu = [round(proc_cpu(p0) - cpu0, 2), round(proc_cpu(c.procs[1].pid), 2)]
    result.update(seconds=seen - t1 if seen else None, pull_files_per_s=round(n / (seen - t1)) if seen else None,
                  lo_bytes=pull_lo, cpu=round(sum(pull_cpu), 2), cpu_per_node=pull_cpu,
                  rss_per_node=c.rss_per_node(), rss_mib=c.peak_rss())
    if not seen:
        have = w6_files_present(d1, expected)
        print(f"bench: w6 {label}: pull not done after {long_deadline:.0f} s: node 1 holds {have:,} of {n:,} files",
              file=sys.stderr, flush=True)
        result.update(ok=False, pull_files_at_deadline=have, index_bytes=[index_bytes(c, 0), index_bytes(c, 1)])
        return
    print(f"bench: w6 {label}: pull {seen - t1:.2f} s, {n / (seen - t1):,.0f} files/s, {pull_lo:,} bytes on lo, "
          f"CPU {pull_cpu} s, peak RSS {result['rss_per_node']} MiB", file=sys.stderr, flush=True)
    # Node 1 says it is in sync (its index saved, node 0's index received: what the restart
    # below starts from), then the contents are checked, neither timed.
    insync = c.wait_back_in_sync(1, long_deadline, adaptive=True)
    result.update(pull_in_sync_s=insync - t1 if insync else None)
    same = wait(c, digest, n, max(args.deadline, 300)) is not None
    print(f"bench: w6 {label}: node 1 in sync after {result['pull_in_sync_s']} s; "
          f"contents {'identical' if same else 'DIFFER'}", file=sys.stderr, flush=True)
    if not insync or not same:
        result.update(ok=False)
        return

    # c. The indexes on disk.
    time.sleep(2)
    result.update(index_bytes=[index_bytes(c, 0), index_bytes(c, 1)])
    # Of which syncctl's write-ahead log (SQLite keeps the file at its largest size until it
    # is checkpointed and truncated).
    result.update(index_wal_bytes=[os.path.getsize(w) if c.is_syncctl(i) and os.path.exists(w := os.path.join(c.dirs[i], ".synckit", "index.db-wal")) else None
                                   for i in range(2)])
    print(f"bench: w6 {label}: index on disk {result['index_bytes']} bytes", file=sys.stderr, flush=True)

    # d. Node 1 stops cleanly and starts again, nothing changed: the time until it is back in
    # sync, the bytes on lo meanwhile, its CPU (against node 0's first scan: a restart that
    # hashes the files again costs about as much) and the bytes it read (one that reads every
    # file again reads at least the tree's n KiB; with 1 KiB files hashing is not what costs
    # most CPU in a scan, the bytes read tell more).
    c.stop_node(1)
    time.sleep(0.5)
    lo0, wall, t2 = lo_bytes(), time.time(), time.monotonic()
    c.start_node(1)
    if c.is_syncctl(1):
        seen = c.wait_back_in_sync(1, long_deadline, adaptive=True)
    else:
        seen, _ = poll(lambda: (c.node_in_sync(1) and syncthing_scanned_since(c, 1, wall), None), long_deadline,
                       f"w6 {label} restart")
    p1 = c.procs[1].pid
    if c.is_syncctl(1):
        # syncctl says how many files its scans read and hashed since it started: none, when
        # the quick check held for every file.
        out = subprocess.run([c.binary(), "status", "--dir", c.dirs[1], "--json"], capture_output=True, text=True)
        try:
            st = json.loads(out.stdout)
            result.update(restart_files_hashed=st.get("filesHashed"), restart_index_spilled=st.get("indexSpilled"))
        except ValueError:
            pass
    result.update(restart_s=seen - t2 if seen else None, restart_lo_bytes=lo_bytes() - lo0,
                  restart_cpu=round(proc_cpu(p1), 2), restart_rss_mib=round(proc_hwm_mib(p1), 1),
                  restart_read_bytes=proc_read_bytes(p1))
    print(f"bench: w6 {label}: restart {result['restart_s']} s, {result['restart_lo_bytes']:,} bytes on lo, "
          f"{result['restart_cpu']} s CPU (first scan: {result['scan_cpu']} s), read {result['restart_read_bytes']:,} bytes "
          f"(first scan: {result['scan_read_bytes']:,}; the files: {n * 1024:,}), "
          f"files hashed: {result.get('restart_files_hashed', 'not told')}", file=sys.stderr, flush=True)
    if not seen:
        result.update(ok=False)
        return
    if c.memory_records is not None and n > c.memory_records and result.get("restart_index_spilled") is False:
        print(f"bench: w6 {label}: node 1 holds {n:,} records but its index did not spill past {c.memory_records}",
              file=sys.stderr, flush=True)
        result.update(ok=False)
        return

    # e. One new 4 KiB file on node 0: the time until node 1 has the same bytes.
    time.sleep(1.5)  # idle
    content = random.Random(66).randbytes(4096)
    rel = os.path.join(w6_leaf(0), "change.bin")
    lo0, t3 = lo_bytes(), time.monotonic()
    with open(os.path.join(d0, rel), "wb") as f:
        f.write(content)
    seen = wait_file([d1], rel, content, args.deadline)
    time.sleep(1)
    result.update(change_s=seen - t3 if seen else None, change_lo_bytes=lo_bytes() - lo0, ok=seen is not None)
    print(f"bench: w6 {label}: one new file on node 1 after {result['change_s']} s", file=sys.stderr, flush=True)

def run_w7(c, digest, args, scale, result):
    """Workload 7: a full mesh of c.nodes nodes (sixteen), each seeded with its own files; the
    time until every folder holds the union, then the latency of one new file from node 0 to
    all the others."""
    per, size = scale["w7_files"], 16 << 10
    for i, d in enumerate(c.dirs):
        for k in range(per):
            write_file(os.path.join(d, f"n{i}", f"f{k}.bin"), size, i * 100000 + k)
        digest.folder(d)  # the seeds' hashes, before the clock starts
    expect = per * c.nodes
    result.update(nodes=c.nodes, files=expect)
    lo0, t0 = lo_bytes(), time.monotonic()
    c.start()
    # Polling sixteen folders: each check lists the folder that lagged last time first (most
    # checks then list one or two folders), and at most every 50 ms (a check near the end
    # lists all sixteen and hashes what changed; wait() then backs off to twice its cost).
    seen = wait(c, digest, expect, args.deadline, min_sleep=0.05, laggard_first=True)
    result.update(ok=seen is not None, seconds=seen - t0 if seen else None, lo_bytes=lo_bytes() - lo0,
                  cpu=c.cpu(), cpu_per_node=c.cpu_per_node(), rss_mib=c.peak_rss(), rss_per_node=c.rss_per_node())
    print(f"bench: w7 {c.tool}: {c.nodes} nodes hold the union of {expect} files after "
          f"{result['seconds'] if seen else 'never (deadline)'} s", file=sys.stderr, flush=True)
    if not seen:
        return
    time.sleep(1.5)  # idle
    content = random.Random(7).randbytes(4096)
    lo1, cpu1, t = lo_bytes(), c.cpu(), time.monotonic()
    with open(os.path.join(c.dirs[0], "new.bin"), "wb") as f:
        f.write(content)
    seen = wait_file(c.dirs[1:], "new.bin", content, args.deadline)
    # The bytes the change cost: measured a second after the last node has the file, so that
    # the index updates the nodes send one another after it count too.
    time.sleep(1)
    result.update(latency_s=seen - t if seen else None, latency_lo_bytes=lo_bytes() - lo1,
                  latency_cpu=round(c.cpu() - cpu1, 2))
    # Byte-identical everywhere, every file (not timed).
    ok = seen is not None and wait(c, digest, expect + 1, 30) is not None
    result.update(ok=ok)

# Workload 9's tree on node 0: moveme/d0 .. moveme/d9, file k in d{k % 10}. The whole of
# moveme/ is then renamed to moved/into/here (a new parent two levels deep).
W9_OLD, W9_NEW, W9_DIRS = "moveme", os.path.join("moved", "into", "here"), 10

def list_dirs(root):
    """Relative paths of the directories under root (the tools' own ones left out)."""
    out = set()
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(IGNORED_PREFIXES)]
        out.update(os.path.relpath(os.path.join(dirpath, d), root) for d in dirnames)
    return out

def inodes_under(root):
    """st_ino of every regular file under root, keyed by its path relative to root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = os.stat(path, follow_symlinks=False).st_ino
    return out

def run_w9(c, digest, args, scale, result):
    """Workload 9: a directory move. Node 0 holds moveme/ (n files of 1 KiB in ten
    subdirectories, --w9-files); once node 1 holds it too, node 0 renames moveme/ to
    moved/into/here. Measured: the time until node 1 holds every file under the new path with
    its content and nothing is left of moveme/, the bytes on lo and each node's CPU meanwhile,
    and how node 1 applied the move: the fraction of its files that kept their inode (1.0: it
    renamed them; 0: it wrote them again and deleted the old ones)."""
    n, label = scale["w9_files"], c.tool
    deadline = min(args.w9_deadline, args.deadline) if args.quick else args.w9_deadline
    d0, d1 = c.dirs
    # The seeds, and the content hash each file must have on node 1 after the move.
    want = {}
    rnd = random.Random(9)
    for k in range(n):
        rel = os.path.join(f"d{k % W9_DIRS}", f"f{k}.bin")
        data = rnd.randbytes(1024)
        os.makedirs(os.path.join(d0, W9_OLD, os.path.dirname(rel)), exist_ok=True)
        with open(os.path.join(d0, W9_OLD, rel), "wb") as f:
            f.write(data)
        want[rel] = hashlib.sha256(data).hexdigest()
    result.update(nodes=2, files=n)

    # Not measured: both nodes start, node 1 pulls everything, both say they are in sync (so
    # that each holds the other's index: the move must be the only news), then idle.
    t = time.monotonic()
    c.start()
    synced = wait(c, digest, n, deadline) is not None
    synced = synced and all(c.wait_back_in_sync(i, deadline) is not None for i in range(2))
    if not synced:
        print(f"bench: w9 {label}: the {n:,} files did not reach node 1 within {deadline:.0f} s", file=sys.stderr, flush=True)
        result.update(ok=False, seconds=None)
        return
    result.update(first_sync_s=round(time.monotonic() - t, 3))
    print(f"bench: w9 {label}: {n:,} files on both nodes, both in sync, after {result['first_sync_s']} s (not measured)",
          file=sys.stderr, flush=True)
    time.sleep(1.5)

    # Node 1's inodes before the move. Each of its files is also held open until the inodes
    # are compared: a file a tool deletes then stays allocated, so ext4 cannot hand its inode
    # number to a file the tool creates meanwhile (which would pass for a rename). An open
    # O_RDONLY descriptor is invisible to both tools (neither watches IN_OPEN/IN_CLOSE_NOWRITE,
    # and the bench's own hashing opens the files anyway). Beyond the descriptor limit the
    # comparison goes by inode number alone (inode_guard false in the result).
    old_inodes = inodes_under(os.path.join(d1, W9_OLD))
    if len(old_inodes) != n:
        print(f"bench: w9 {label}: node 1 holds {len(old_inodes):,} files under {W9_OLD}/, not {n:,}", file=sys.stderr, flush=True)
        result.update(ok=False, seconds=None)
        return
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and n + 256 > soft and (hard == resource.RLIM_INFINITY or n + 256 <= hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 256, hard))
        soft = n + 256
    guard = soft == resource.RLIM_INFINITY or n + 256 <= soft
    held = [os.open(os.path.join(d1, W9_OLD, rel), os.O_RDONLY) for rel in old_inodes] if guard else []
    result.update(inode_guard=guard)

    try:
        # The move (timed from here): a new parent two levels deep, then one rename(2) of the
        # whole directory, which both tools see as the inotify pair IN_MOVED_FROM/IN_MOVED_TO.
        want_names = {os.path.join(W9_NEW, rel) for rel in want}
        procs = list(c.procs)
        lo0, cpu0, t0 = lo_bytes(), [proc_cpu(p.pid) for p in procs], time.monotonic()
        os.makedirs(os.path.join(d0, os.path.dirname(W9_NEW)))
        os.rename(os.path.join(d0, W9_OLD), os.path.join(d0, W9_NEW))

        # Done when node 1 lists exactly the n files under the new path (none under moveme/ nor
        # anywhere else, no transfer in progress), of 1 KiB each, with the right content, and
        # moveme/ itself is gone. Cheapest first (readdir, then stat, then hashes), and the
        # time is taken before the hashing, as Digest.converged does. files_seen: when the
        # files were first all right, in case the directory outlives them.
        files_seen = [None]
        def moved():
            names = list_names(d1)
            if names is None:
                return False, "a transfer in progress on node 1"
            if names != want_names:
                under_new = len(names & want_names)
                return False, f"{under_new:,} of {n:,} files under the new path, {len(names) - under_new:,} others"
            try:
                if any(os.stat(os.path.join(d1, p)).st_size != 1024 for p in names):
                    return False, "sizes differ"
            except OSError:
                return False, "a file vanished"
            seen = time.monotonic()
            for rel, h in want.items():
                try:
                    with open(os.path.join(d1, W9_NEW, rel), "rb") as f:
                        if hashlib.sha256(f.read()).hexdigest() != h:
                            return False, f"{rel} differs"
                except OSError:
                    return False, f"{rel} vanished"
            if files_seen[0] is None:
                files_seen[0] = seen
            if os.path.lexists(os.path.join(d1, W9_OLD)):
                return False, f"every file moved, {W9_OLD}/ still there"
            return True, seen
        _, far = poll(moved, deadline, f"w9 {label} move", min_sleep=0.01)
        seen = far if isinstance(far, float) else None
        # The phase's figures, read right at its end: bytes on lo (lo's transmitted bytes: every
        # packet between the two nodes, both directions, crosses lo once) and each node's CPU.
        lo_phase = lo_bytes() - lo0
        cpu = [round(proc_cpu(p.pid) - c0, 2) for p, c0 in zip(procs, cpu0)]
        result.update(seconds=seen - t0 if seen else None, lo_bytes=lo_phase, bytes_per_file=round(lo_phase / n),
                      cpu=round(sum(cpu), 2), cpu_per_node=cpu, rss_per_node=c.rss_per_node(), rss_mib=c.peak_rss(),
                      files_s=files_seen[0] - t0 if files_seen[0] else None)
        # How node 1 applied the move: of its files under the new path, the fraction that have
        # the inode the same file had under moveme/ (read while the old ones are still held).
        kept = 0
        for rel, ino in old_inodes.items():
            try:
                kept += os.stat(os.path.join(d1, W9_NEW, rel), follow_symlinks=False).st_ino == ino
            except OSError:
                pass
        result.update(inode_kept=kept, inode_kept_fraction=round(kept / n, 4))
    finally:
        for fd in held:
            os.close(fd)
    if not seen:
        print(f"bench: w9 {label}: node 1 not done {deadline:.0f} s after the move: {far}", file=sys.stderr, flush=True)
        result.update(ok=False)
        return
    print(f"bench: w9 {label}: move of {n:,} files applied on node 1 after {result['seconds']:.3f} s "
          f"(files: {result['files_s']:.3f} s), {lo_phase:,} bytes on lo ({result['bytes_per_file']:,} per file), "
          f"CPU {cpu} s, inode kept {kept:,} of {n:,}", file=sys.stderr, flush=True)

    # Strict, not timed: both folders byte-identical with the same directories (moved/into/here
    # and its ten subdirectories on both, nothing left of moveme/), then both nodes in sync.
    # identical_s: from the move until the folders were seen identical; settle_*: until both
    # nodes also said they were in sync (the index updates that follow the files included).
    def same():
        return bool(list_dirs(d0) == list_dirs(d1) and digest.converged(c.dirs, n)), None
    identical = poll(same, deadline, f"w9 {label} folders identical")[0]
    ok = identical is not None and all(c.wait_back_in_sync(i, deadline) is not None for i in range(2))
    result.update(ok=ok, identical_s=identical - t0 if identical else None, settle_s=time.monotonic() - t0 if ok else None,
                  settle_lo_bytes=lo_bytes() - lo0)
    if not ok:
        print(f"bench: w9 {label}: the folders did not end identical and in sync: directories only on node 0 "
              f"{sorted(list_dirs(d0) - list_dirs(d1))[:5]}, only on node 1 {sorted(list_dirs(d1) - list_dirs(d0))[:5]}",
              file=sys.stderr, flush=True)

def count_files(root):
    return sum(len(f) for _, _, f in os.walk(root))

def run_workload(n, tool, args, scale):
    root = tempfile.mkdtemp(prefix=f"bench-{tool}-w{n}-", dir=args.workdir)
    used0 = shutil.disk_usage(root).used
    c = Cluster(tool, root, args, {6: 2, 7: scale["w7_nodes"], 9: 2}.get(n, NODES))
    c.prepare()
    digest = Digest()
    result = {"workload": n, "tool": tool}
    try:
        if n in (6, 7, 9):
            {6: run_w6, 7: run_w7, 9: run_w9}[n](c, digest, args, scale, result)
            return result
        if n == 1:
            per, size = scale["w1_files"], 16 << 10
            for i, d in enumerate(c.dirs):
                for k in range(per):
                    write_file(os.path.join(d, f"n{i}", f"f{k}.bin"), size, i * 100000 + k)
            expect = per * c.nodes
        elif n in (2, 4):
            write_file(os.path.join(c.dirs[0], "big.bin"), scale["w2_bytes"], 2)
            expect = 1
        elif n == 3:
            expect = 0
        elif n in (5, 8):
            for k in range(scale["w5_files"]):
                write_file(os.path.join(c.dirs[0], f"d{k % 100}", f"f{k}.txt"), 1024, k)
            expect = scale["w5_files"]
        for d in c.dirs:
            digest.folder(d)  # the seeds' hashes, before the clock starts
        lo0, t0 = lo_bytes(), time.monotonic()
        c.start()
        if n in (1, 2, 5):
            seen = wait(c, digest, expect, args.deadline)
            result.update(ok=seen is not None, seconds=seen - t0 if seen else None)
        else:
            # Converge first, then measure the change.
            ok = wait(c, digest, expect, args.deadline) is not None
            if not ok:
                result.update(ok=False, seconds=None)
            elif n == 3:
                time.sleep(1.5)  # idle
                lat = []
                for k in range(scale["w3_repeats"]):
                    lo0, t = lo_bytes(), time.monotonic()
                    write_file(os.path.join(c.dirs[0], f"new-{k}.bin"), 4096, 300 + k)
                    seen = wait(c, digest, k + 1, args.deadline)
                    ok = seen is not None
                    if not ok:
                        break
                    lat.append(seen - t)
                    time.sleep(0.3)
                result.update(ok=ok, seconds=statistics.median(lat) if lat else None, samples=lat)
            elif n == 8:
                # A converged cluster; one node stops cleanly and starts again with nothing
                # changed. Measured: bytes on lo from its start until it is back in sync with
                # every peer (connected, indexes exchanged, nothing to pull), and that time.
                time.sleep(2)
                c.stop_node(c.nodes - 1)
                time.sleep(0.5)
                lo0, t = lo_bytes(), time.monotonic()
                c.start_node(c.nodes - 1)
                seen = c.wait_back_in_sync(c.nodes - 1, args.deadline)
                ok = seen is not None
                result.update(ok=ok, seconds=seen - t if ok else None, restart_lo_bytes=lo_bytes() - lo0)
            elif n == 4:
                time.sleep(1.5)
                lo0, t = lo_bytes(), time.monotonic()
                with open(os.path.join(c.dirs[0], "big.bin"), "r+b") as f:
                    f.seek(scale["w2_bytes"] // 2)
                    f.write(random.Random(4).randbytes(1 << 20))
                seen = wait(c, digest, 1, args.deadline)
                ok = seen is not None
                result.update(ok=ok, seconds=seen - t if ok else None)
        result.update(cpu=c.cpu(), cpu_per_node=c.cpu_per_node(), rss_mib=c.peak_rss(), rss_per_node=c.rss_per_node(), lo_bytes=lo_bytes() - lo0)
    finally:
        c.stop()
        if n == 6 and not args.keep:
            # Millions of files, GiBs (a million 1 KiB files take 4 GiB per node): deferred like
            # the trees below while the disk keeps room for two more such runs, else deleted now
            # (a few runs would fill the disk) and the deletion committed (sync). A run right
            # after such a deletion may create its files more slowly (seeding a million took
            # 209 s once right after one, 79 s on a fresh disk), so the disk decides.
            du = shutil.disk_usage(root)
            if du.free > 2 * max(du.used - used0, 0) + (5 << 30):
                DEFERRED.append(root)
            else:
                print(f"bench: w6 {tool}: little disk left, deleting {root} now", file=sys.stderr, flush=True)
                subprocess.run(["rm", "-rf", root])
                os.sync()
        elif not args.keep:
            # Deleting tens of thousands of files right before the next run would slow that
            # run's file creation (ext4 skips recently freed inodes when it allocates), whichever
            # tool it measures: such trees are deleted when the whole benchmark ends.
            if count_files(root) > 1000:
                DEFERRED.append(root)
            else:
                shutil.rmtree(root, ignore_errors=True)
    return result

# ---------------------------------------------------------------- report

NAMES = {1: "1: 4 x 250 x 16 KiB, time to union", 2: "2: 512 MiB to 3 peers", 3: "3: one new 4 KiB file (latency)",
         4: "4: 1 MiB edit in 512 MiB", 5: "5: 20,000 x 1 KiB to 3 peers",
         6: "6: {files:,} x 1 KiB to 1 empty peer (pull)", 7: "7: {nodes} nodes x {per} x 16 KiB, time to union",
         8: "8: one of 4 nodes restarts, 20,000 files, nothing changed",
         9: "9: directory move, {files:,} x 1 KiB, 1 peer"}

def write_table(results, path):
    """Medians per workload and tool, with the ratio Syncthing / SyncKit, between the markers
    `<!-- bench:start -->` and `<!-- bench:end -->` of `path`."""
    def med(rows, key):
        vals = [r[key] for r in rows if r.get(key) is not None]
        return statistics.median(vals) if vals else None
    def fmt(x, spec):
        return "-" if x is None else format(x, spec)  # a run that did not get that far
    labels = {}
    import platform
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores ({platform.machine()}), "
             f"{subprocess.run(['syncthing', '--version'], capture_output=True, text=True).stdout.split('(')[0].strip()}; "
             f"medians of {max(r['run'] for r in results) + 1} runs; ratio = that row's time / syncctl's time (syncctl runs over TLS).", "",
             "| workload | tool | time (s) | ratio | CPU (s) | peak RSS per node (MiB) | bytes on lo |",
             "|---|---|---|---|---|---|---|"]
    for n in sorted({r["workload"] for r in results}):
        base = med([r for r in results if r["workload"] == n and r["tool"] == "synckit"], "seconds")
        for tool in ["synckit", "synckit-plain", "synckit-before", "synckit-before-plain", "synckit-between",
                     "synckit-between-plain", "syncthing", "syncthing-1s", "mixed-serve", "mixed-serve-1s", "mixed-pull", "mixed-pull-1s"]:
            rows = [r for r in results if r["workload"] == n and r["tool"] == tool]
            if not rows:
                continue
            t = med(rows, "seconds")
            ratio = f"{t / base:.2f}x" if t and base and tool != "synckit" else ""
            label = {"synckit": "syncctl", "synckit-plain": "syncctl --insecure-plaintext", "synckit-before": "syncctl (before)", "synckit-before-plain": "syncctl (before) --insecure-plaintext", "synckit-between": "syncctl (between)", "synckit-between-plain": "syncctl (between) --insecure-plaintext", "syncthing": "Syncthing (default)", "syncthing-1s": "Syncthing (watcher delay 1 s)", "mixed-serve": "mixed: syncctl serves 3 Syncthings", "mixed-serve-1s": "mixed: syncctl serves 3 Syncthings (1 s)", "mixed-pull": "mixed: syncctl pulls from 3 Syncthings", "mixed-pull-1s": "mixed: syncctl pulls from 3 Syncthings (1 s)"}[tool]
            lo = med(rows, "restart_lo_bytes" if n == 8 else "lo_bytes")
            name = NAMES[n].format(files=rows[0].get("files", 0), nodes=rows[0].get("nodes", 0),
                                   per=rows[0].get("files", 0) // max(rows[0].get("nodes", 1), 1))
            lines.append(f"| {name} | {label} | {fmt(t, '.3f')} | {ratio} | {fmt(med(rows, 'cpu'), '.2f')} | {fmt(med(rows, 'rss_mib'), '.0f')} | {fmt(lo, ',.0f')} |")
            labels[tool] = label
    # Workloads 6 and 7 measure more than one time: their other figures, medians too.
    def medlist(rows, key):
        lists = [r[key] for r in rows if r.get(key)]
        return [statistics.median(x[i] for x in lists if x[i] is not None) if any(x[i] is not None for x in lists) else None
                for i in range(len(lists[0]))] if lists else None
    w6 = [r for r in results if r["workload"] == 6]
    if w6:
        lines += ["", f"Workload 6, {w6[0]['files']:,} files of 1 KiB in 1,000 directories, node 0 then node 1: "
                  "floor = tar reading the whole tree (stat and read, warm cache); first scan = node 0 alone, from its start "
                  "until it reports every file indexed; restart = node 1 stops and starts again with nothing changed, until "
                  "it is back in sync (files hashed: what syncctl status says its scans read again, - where the tool does not tell); "
                  "one new file = a new 4 KiB file on node 0 until node 1 has its bytes.", "",
                  "| tool | floor (s, files/s) | first scan (s, files/s, CPU s) | pull (files/s) | index on disk per node (MiB) "
                  "| restart (s, bytes on lo, CPU s, files hashed) | one new file (s) |",
                  "|---|---|---|---|---|---|---|"]
        for tool in [t for t in labels if any(r["tool"] == t for r in w6)]:
            rows = [r for r in w6 if r["tool"] == tool]
            idx = medlist(rows, "index_bytes")
            lines.append(f"| {labels[tool]} | {fmt(med(rows, 'floor_s'), '.2f')}, {fmt(med(rows, 'floor_files_per_s'), ',.0f')} "
                         f"| {fmt(med(rows, 'scan_s'), '.2f')}, {fmt(med(rows, 'scan_files_per_s'), ',.0f')}, {fmt(med(rows, 'scan_cpu'), '.1f')} "
                         f"| {fmt(med(rows, 'pull_files_per_s'), ',.0f')} "
                         f"| {' / '.join(fmt(x / 2**20 if x is not None else None, '.1f') for x in idx) if idx else '-'} "
                         f"| {fmt(med(rows, 'restart_s'), '.2f')}, {fmt(med(rows, 'restart_lo_bytes'), ',.0f')}, {fmt(med(rows, 'restart_cpu'), '.1f')}, "
                         f"{fmt(med(rows, 'restart_files_hashed'), ',.0f')} | {fmt(med(rows, 'change_s'), '.3f')} |")
    w7 = [r for r in results if r["workload"] == 7]
    if w7:
        lines += ["", f"Workload 7, {w7[0]['nodes']} nodes in a full mesh: after the union, one new 4 KiB file on node 0 "
                  f"until all {w7[0]['nodes'] - 1} others have its bytes (bytes on lo until a second after that).", "",
                  "| tool | time to union (s) | CPU per node, median (s) | one new file to every peer (s) | its bytes on lo |",
                  "|---|---|---|---|---|"]
        for tool in [t for t in labels if any(r["tool"] == t for r in w7)]:
            rows = [r for r in w7 if r["tool"] == tool]
            per_node = [statistics.median(r["cpu_per_node"]) for r in rows if r.get("cpu_per_node")]
            lines.append(f"| {labels[tool]} | {fmt(med(rows, 'seconds'), '.3f')} | {fmt(statistics.median(per_node) if per_node else None, '.2f')} "
                         f"| {fmt(med(rows, 'latency_s'), '.3f')} | {fmt(med(rows, 'latency_lo_bytes'), ',.0f')} |")
    w9 = [r for r in results if r["workload"] == 9]
    if w9:
        lines += ["", f"Workload 9, a directory move: node 0 renames moveme/ ({w9[0]['files']:,} files of 1 KiB in 10 "
                  "subdirectories, already on node 1) to moved/into/here; time until node 1 holds every file under the new "
                  "path and nothing of moveme/, bytes on lo and CPU meanwhile; inode kept = the fraction of node 1's files "
                  "whose inode did not change (1: the move was applied as renames, 0: the files were written again).", "",
                  "| tool | time (s) | bytes on lo | bytes on lo per file | inode kept | CPU per node (s) |",
                  "|---|---|---|---|---|---|"]
        for tool in [t for t in labels if any(r["tool"] == t for r in w9)]:
            rows = [r for r in w9 if r["tool"] == tool]
            cpu = medlist(rows, "cpu_per_node")
            lines.append(f"| {labels[tool]} | {fmt(med(rows, 'seconds'), '.3f')} | {fmt(med(rows, 'lo_bytes'), ',.0f')} "
                         f"| {fmt(med(rows, 'bytes_per_file'), ',.0f')} | {fmt(med(rows, 'inode_kept_fraction'), '.3f')} "
                         f"| {' / '.join(fmt(x, '.2f') for x in cpu) if cpu else '-'} |")
    text = open(path).read()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start in text and end in text:
        text = text[:text.index(start) + len(start)] + "\n" + "\n".join(lines) + "\n" + text[text.index(end):]
        open(path, "w").write(text)

# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--syncctl", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    # 6 and 7 last: workloads 1-5 and 8 run as they did before these were added.
    # 9 after them, for the same reason.
    ap.add_argument("--workloads", default="1,2,3,4,5,8,6,7,9")
    ap.add_argument("--tools", default="synckit,syncthing,syncthing-1s")
    ap.add_argument("--syncctl-before", default=None,
                    help="another syncctl binary (an older commit), run as the tool synckit-before: before/after figures in one run")
    ap.add_argument("--syncctl-between", default=None,
                    help="a third syncctl binary, run as the tool synckit-between (synckit-between-plain: without TLS)")
    ap.add_argument("--deadline", type=float, default=600)
    ap.add_argument("--w6-files", type=int, default=1000000, help="workload 6's number of 1 KiB files (not in quick mode: 2,000)")
    ap.add_argument("--w6-deadline", type=float, default=3600,
                    help="workload 6's deadline for the first scan, the pull and the restart (not in quick mode)")
    ap.add_argument("--w6-memory-records", type=int, default=None,
                    help="syncctl's --memory-records in workload 6 (default: its own, 50,000; quick mode: 500)")
    ap.add_argument("--w9-files", type=int, default=5000, help="workload 9's number of 1 KiB files moved (quick mode: 500)")
    ap.add_argument("--w9-deadline", type=float, default=600,
                    help="workload 9's deadline for the first sync and for the move (quick mode: at most --deadline, 120 s)")
    ap.add_argument("--workdir", default="/tmp")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None, help="write the table of medians into this file, between the bench markers")
    ap.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if any(t.startswith("synckit-before") for t in args.tools.split(",")) and not args.syncctl_before:
        ap.error("the tools synckit-before* need --syncctl-before PATH")
    if any(t.startswith("synckit-between") for t in args.tools.split(",")) and not args.syncctl_between:
        ap.error("the tools synckit-between* need --syncctl-between PATH")

    if not args.in_netns:
        # A namespace with only lo: nothing can leave the machine.
        cmd = ["unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable] + sys.argv + ["--in-netns"]
        sys.exit(subprocess.call(cmd))

    scale = ({"w1_files": 10, "w2_bytes": 8 << 20, "w3_repeats": 2, "w5_files": 200, "w6_files": 2000, "w7_nodes": 16, "w7_files": 5,
              "w9_files": 500} if args.quick else
             {"w1_files": 250, "w2_bytes": 512 << 20, "w3_repeats": 5, "w5_files": 20000, "w6_files": args.w6_files, "w7_nodes": 16, "w7_files": 100,
              "w9_files": args.w9_files})
    if args.quick:
        args.runs = 1
        args.deadline = min(args.deadline, 120)
    results = []
    for n in [int(x) for x in args.workloads.split(",")]:
        # Runs interleave the tools (A B A B A B, not A A A B B B), so that a machine that
        # warms up or slows down during a workload weighs on every tool alike.
        for r in range(args.runs):
            for tool in args.tools.split(","):
                res = run_workload(n, tool, args, scale)
                res["run"] = r
                print(json.dumps(res), flush=True)
                results.append(res)
    for root in DEFERRED:
        subprocess.run(["rm", "-rf", root])  # faster than shutil.rmtree at millions of files
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.markdown and not args.quick:
        write_table(results, args.markdown)
    failed = [r for r in results if not r.get("ok")]
    if failed:
        print(f"bench: {len(failed)} of {len(results)} runs did not converge", file=sys.stderr)
        sys.exit(1)
    print(f"bench: {len(results)} passed, 0 failed")

if __name__ == "__main__":
    main()
