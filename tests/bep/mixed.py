#!/usr/bin/env python3
"""A mixed cluster: two real Syncthing devices and two syncctl nodes, full mesh, one folder.

Runs in a network namespace of its own that has only lo (`unshare -n`), with Syncthing's local and
global discovery, relays, NAT, usage reporting, crash reporting, upgrades and GUI off in its config
before its first start. Every node starts with files of its own; then, each checked on all four:

  1. the identical union;
  2. an edit on a Syncthing device;
  3. a 1 MiB overwrite inside a 20 MiB file on a syncctl node;
  4. a delete (on a Syncthing device), a rename (on a syncctl node);
  5. a concurrent edit of one file on a Syncthing device and a syncctl node: all four end
     identical, one winner, the loser kept as exactly one conflict copy;
  6. a non-ASCII name; a symlink made on Syncthing; permissions changed on either kind;
  7. Syncthing restarted, then a syncctl node restarted: still identical, no conflict copy made,
     and the restarted syncctl node received no full index again (its log says how many
     records each peer sent after the restart).

Usage: python3 tests/bep/mixed.py --syncctl PATH [--keep]
Exit status 0 when every step converged; the log of each node is printed on failure.
"""
import argparse, copy, hashlib, os, re, shutil, signal, socket, subprocess, sys, tempfile, time
import unicodedata
import xml.etree.ElementTree as ET

ST_PORTS = [22101, 22102]
SK_PORTS = [22201, 22202]
TIMEOUT = 90


def log(msg):
    print(f"[mixed {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def content(seed, size):
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest() * 2048  # 64 KiB of pattern
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest() + block[: 65536 - 32]
        counter += 1
    return bytes(out[:size])


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp-mixed"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def tree(folder):
    """Relative path (NFC) -> sha256 of content, for files; directories as 'dir'."""
    out = {}
    for root, dirs, files in os.walk(folder):
        rel_root = os.path.relpath(root, folder)
        dirs[:] = [d for d in dirs if d not in (".synckit", ".stfolder", ".stversions")]
        for d in dirs:
            rel = os.path.normpath(os.path.join(rel_root, d))
            out[unicodedata.normalize("NFC", rel)] = "dir"
        for f in files:
            if f.startswith(".syncthing.") or f.endswith(".tmp") or f.startswith(".synckit-") or f == ".stignore":
                continue  # temp files of a pull under way
            rel = os.path.normpath(os.path.join(rel_root, f))
            full = os.path.join(root, f)
            key = unicodedata.normalize("NFC", rel)
            if os.path.islink(full):
                out[key] = "link:" + os.readlink(full)
                continue
            try:
                with open(full, "rb") as fh:
                    digest = hashlib.sha256(fh.read()).hexdigest()
                # Permission bits count too: both sides sync them.
                out[key] = digest if os.stat(full).st_mode & 0o777 == 0o644 else f"{digest}/{os.stat(full).st_mode & 0o777:o}"
            except OSError:
                out[key] = "unreadable"
    return out


class Cluster:
    def __init__(self, work, syncctl):
        self.work = work
        self.syncctl = syncctl
        self.st_home = [os.path.join(work, f"st{i}") for i in range(2)]
        self.st_dir = [os.path.join(work, f"st{i}-folder") for i in range(2)]
        self.sk_dir = [os.path.join(work, f"sk{i}-folder") for i in range(2)]
        self.procs = {}
        self.st_ids = []
        self.sk_ids = []

    @property
    def folders(self):
        return self.st_dir + self.sk_dir

    def names(self):
        return ["st0", "st1", "sk0", "sk1"]

    def setup(self):
        for d in self.folders:
            os.makedirs(d, exist_ok=True)
        for d in self.st_dir:
            os.makedirs(os.path.join(d, ".stfolder"), exist_ok=True)
        for home in self.st_home:
            subprocess.run(["syncthing", "generate", f"--home={home}", "--no-default-folder"], check=True, capture_output=True)
            self.st_ids.append(subprocess.run(["syncthing", "serve", f"--home={home}", "--device-id"], check=True,
                                              capture_output=True, text=True).stdout.strip())
        for d in self.sk_dir:
            out = subprocess.run([self.syncctl, "id", "--dir", d], check=True, capture_output=True, text=True).stdout
            self.sk_ids.append(out.splitlines()[0].strip())
        devices = list(zip(self.st_ids + self.sk_ids, self.names(), ST_PORTS + SK_PORTS))
        for i, home in enumerate(self.st_home):
            path = os.path.join(home, "config.xml")
            t = ET.parse(path)
            cfg = t.getroot()
            for el in cfg.findall("folder") + cfg.findall("device"):
                cfg.remove(el)
            # The folder and devices as Syncthing's GUI makes them: copies of the config's own
            # defaults (maxConflicts 10 and the rest; a bare element gets zero values, and
            # maxConflicts 0 deletes conflict losers instead of keeping a copy).
            defaults = cfg.find("defaults")
            f = copy.deepcopy(defaults.find("folder"))
            for el in f.findall("device"):
                f.remove(el)
            f.attrib.update({"id": "default", "label": "Default Folder", "path": self.st_dir[i], "rescanIntervalS": "30",
                             "fsWatcherEnabled": "true", "fsWatcherDelayS": "1"})
            for dev, _, _ in devices:
                d = ET.Element("device", {"id": dev, "introducedBy": ""})
                ET.SubElement(d, "encryptionPassword")
                f.insert(1, d)
            cfg.append(f)
            for dev, name, port in devices:
                d = copy.deepcopy(defaults.find("device"))
                d.attrib.update({"id": dev, "name": name})
                d.find("address").text = f"tcp://127.0.0.1:{port}"
                cfg.append(d)
            opts = cfg.find("options")

            def setopt(name, value):
                for el in opts.findall(name):
                    opts.remove(el)
                ET.SubElement(opts, name).text = value
            setopt("listenAddress", f"tcp://127.0.0.1:{ST_PORTS[i]}")
            for name, value in [("globalAnnounceEnabled", "false"), ("localAnnounceEnabled", "false"),
                                ("relaysEnabled", "false"), ("natEnabled", "false"), ("urAccepted", "-1"),
                                ("urSeen", "3"), ("autoUpgradeIntervalH", "0"), ("crashReportingEnabled", "false"),
                                ("startBrowser", "false"), ("announceLANAddresses", "false"),
                                ("reconnectionIntervalS", "2")]:
                setopt(name, value)
            cfg.find("gui").set("enabled", "false")
            t.write(path)

    def start_st(self, i):
        logf = open(os.path.join(self.work, f"st{i}.log"), "ab")
        self.procs[f"st{i}"] = subprocess.Popen(
            ["syncthing", "serve", f"--home={self.st_home[i]}", "--no-browser", "--no-restart", "--no-upgrade"],
            stdout=logf, stderr=logf, env=dict(os.environ, STNOUPGRADE="1", STMONITORED="1", STNORESTART="1",
                                               STTRACE=os.environ.get("MIXED_STTRACE", "")))

    def start_sk(self, i):
        logf = open(os.path.join(self.work, f"sk{i}.log"), "ab")
        others = [(self.st_ids[j], ST_PORTS[j]) for j in range(2)] + [(self.sk_ids[j], SK_PORTS[j]) for j in range(2) if j != i]
        cmd = [self.syncctl, "run", "--dir", self.sk_dir[i], "--port", str(SK_PORTS[i]), "--bind", "127.0.0.1",
               "--name", f"sk{i}", "--discovery", "static", "--folder-id", "default", "--policy", "newest", "--log", "stderr"]
        for dev, port in others:
            cmd += ["--peer", f"127.0.0.1:{port}", "--trust", dev]
        self.procs[f"sk{i}"] = subprocess.Popen(cmd, stdout=logf, stderr=logf)

    def stop(self, name):
        p = self.procs.pop(name, None)
        if p and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self):
        for name in list(self.procs):
            self.stop(name)

    def trees(self):
        return [tree(d) for d in self.folders]

    def wait_identical(self, what, check=None, timeout=TIMEOUT):
        deadline = time.time() + timeout
        started = time.time()
        while time.time() < deadline:
            ts = self.trees()
            if all(t == ts[0] for t in ts) and (check is None or check(ts[0])):
                log(f"{what}: identical on all four in {time.time() - started:.1f} s ({len(ts[0])} entries)")
                return ts[0]
            time.sleep(0.5)
        ts = self.trees()
        for name, t in zip(self.names(), ts):
            log(f"  {name}: {sorted((k, v[:8]) for k, v in t.items())}")
        raise AssertionError(f"{what}: not identical after {timeout} s")

    def log_size(self, name):
        path = os.path.join(self.work, f"{name}.log")
        return os.path.getsize(path) if os.path.exists(path) else 0

    def log_text(self, name, since):
        with open(os.path.join(self.work, f"{name}.log"), "rb") as f:
            f.seek(since)
            return f.read().decode(errors="replace")

    def index_received(self, name, since, device):
        """The record counts a syncctl node logged for a peer's index catch-up since `since`."""
        short = device[:7]
        return [int(m.group(1)) for line in self.log_text(name, since).splitlines()
                if "peer's index received" in line and f"peer.id={short}" in line
                for m in [re.search(r"records=(\d+)", line)] if m]

    def dump_logs(self):
        for name in ["st0", "st1", "sk0", "sk1"]:
            path = os.path.join(self.work, f"{name}.log")
            if os.path.exists(path):
                data = open(path, "rb").read().decode(errors="replace").splitlines()
                print(f"----- {name}.log (last 60 lines) -----")
                print("\n".join(data[-60:]))


def conflicts(t):
    return sorted(k for k in t if ".sync-conflict-" in k)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--syncctl", required=True)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    syncctl = os.path.abspath(args.syncctl)
    if os.environ.get("MIXED_IN_NETNS") != "1":
        env = dict(os.environ, MIXED_IN_NETNS="1")
        sys.exit(subprocess.call(["unshare", "-n", sys.executable, os.path.abspath(__file__)] + sys.argv[1:], env=env))
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert len(links.strip().splitlines()) == 1, "the namespace must have only lo"

    work = tempfile.mkdtemp(prefix="bep-mixed-")
    c = Cluster(work, syncctl)
    ok = False
    try:
        c.setup()
        log(f"Syncthing {subprocess.run(['syncthing', '--version'], capture_output=True, text=True).stdout.split()[1]}; "
            f"devices st0 {c.st_ids[0][:7]} st1 {c.st_ids[1][:7]} sk0 {c.sk_ids[0][:7]} sk1 {c.sk_ids[1][:7]}")
        # 1. Each starts with its own files.
        for i, d in enumerate(c.folders):
            name = c.names()[i]
            write(os.path.join(d, f"{name}-small.txt"), f"made on {name}\n".encode())
            write(os.path.join(d, f"{name}/nested/data.bin"), content(name, 300 * 1024 + i))
            write(os.path.join(d, f"{name}-empty"), b"")
        write(os.path.join(c.sk_dir[0], "big.bin"), content("big", 20 << 20))
        for i in range(2):
            c.start_st(i)
            c.start_sk(i)
        union = c.wait_identical("1. union", check=lambda t: "big.bin" in t and all(f"{n}-small.txt" in t for n in c.names()), timeout=150)

        # 2. An edit on a Syncthing device.
        write(os.path.join(c.st_dir[0], "sk1-small.txt"), b"edited on st0\n")
        want = hashlib.sha256(b"edited on st0\n").hexdigest()
        c.wait_identical("2. edit on Syncthing", check=lambda t: t.get("sk1-small.txt") == want)

        # 3. A 1 MiB overwrite inside the 20 MiB file, on a syncctl node.
        path = os.path.join(c.sk_dir[1], "big.bin")
        with open(path, "r+b") as f:
            f.seek(7 << 20)
            f.write(content("overwrite", 1 << 20))
        with open(path, "rb") as f:
            want = hashlib.sha256(f.read()).hexdigest()
        c.wait_identical("3. 1 MiB overwrite in 20 MiB on syncctl", check=lambda t: t.get("big.bin") == want)

        # 4. A delete on Syncthing, a rename on syncctl.
        os.remove(os.path.join(c.st_dir[1], "st0-small.txt"))
        c.wait_identical("4a. delete on Syncthing", check=lambda t: "st0-small.txt" not in t)
        os.rename(os.path.join(c.sk_dir[0], "st1-small.txt"), os.path.join(c.sk_dir[0], "st1-renamed.txt"))
        c.wait_identical("4b. rename on syncctl", check=lambda t: "st1-renamed.txt" in t and "st1-small.txt" not in t)

        # 5. A concurrent edit: sk1 is frozen while both sides edit, then let go.
        target = "sk0-small.txt"
        c.procs["sk1"].send_signal(signal.SIGSTOP)
        try:
            write(os.path.join(c.sk_dir[1], target), b"edited on sk1, concurrently\n")
            time.sleep(1.5)
            write(os.path.join(c.st_dir[1], target), b"edited on st1, concurrently (newer)\n")
            time.sleep(4)
        finally:
            c.procs["sk1"].send_signal(signal.SIGCONT)
        t = c.wait_identical("5. concurrent edit", check=lambda t: len(conflicts(t)) >= 1, timeout=120)
        time.sleep(5)
        t = c.wait_identical("5. concurrent edit, settled")
        cs = conflicts(t)
        assert len(cs) == 1, f"expected one conflict copy, got {cs}"
        versions = {t[target], t[cs[0]]}
        assert versions == {hashlib.sha256(b"edited on sk1, concurrently\n").hexdigest(),
                            hashlib.sha256(b"edited on st1, concurrently (newer)\n").hexdigest()}, "both versions kept"
        st_won = t[target] == hashlib.sha256(b"edited on st1, concurrently (newer)\n").hexdigest()
        log(f"   winner {'st1' if st_won else 'sk1'}; copy {cs[0]}")

        # 5b. The other way round: the Syncthing device's edit is the older one and loses.
        target = "st0-empty"
        c.procs["st0"].send_signal(signal.SIGSTOP)
        try:
            write(os.path.join(c.st_dir[0], target), b"edited on st0, concurrently (older)\n")
            time.sleep(1.5)
            write(os.path.join(c.sk_dir[0], target), b"edited on sk0, concurrently (newer)\n")
            time.sleep(4)
        finally:
            c.procs["st0"].send_signal(signal.SIGCONT)
        t = c.wait_identical("5b. concurrent edit, Syncthing loses", check=lambda t: len(conflicts(t)) >= 2, timeout=120)
        time.sleep(5)
        t = c.wait_identical("5b. settled")
        cs = conflicts(t)
        assert len(cs) == 2, f"expected two conflict copies in all, got {cs}"
        new = [x for x in cs if x.startswith("st0-empty")]
        assert len(new) == 1 and t[target] == hashlib.sha256(b"edited on sk0, concurrently (newer)\n").hexdigest() \
            and t[new[0]] == hashlib.sha256(b"edited on st0, concurrently (older)\n").hexdigest(), f"winner and copy: {new}"
        log(f"   winner sk0; copy {new[0]}")

        # 6. A non-ASCII name.
        odd = "Grüße/naïve café ☕.txt"
        write(os.path.join(c.st_dir[0], odd), "ünïcödé\n".encode())
        c.wait_identical("6. non-ASCII name", check=lambda t: unicodedata.normalize("NFC", odd) in t)

        # 6b. A symlink made on Syncthing, permissions changed on syncctl and on Syncthing.
        os.symlink("sk0/nested/data.bin", os.path.join(c.st_dir[1], "link-to-data"))
        c.wait_identical("6b. symlink on Syncthing", check=lambda t: t.get("link-to-data") == "link:sk0/nested/data.bin")
        os.chmod(os.path.join(c.sk_dir[1], "sk1/nested/data.bin"), 0o600)
        c.wait_identical("6c. chmod 600 on syncctl", check=lambda t: t.get("sk1/nested/data.bin", "").endswith("/600"))
        os.chmod(os.path.join(c.st_dir[0], "st1/nested/data.bin"), 0o755)
        c.wait_identical("6d. chmod 755 on Syncthing", check=lambda t: t.get("st1/nested/data.bin", "").endswith("/755"))

        # 7. Restarts: Syncthing, then a syncctl node. Neither may start a full index exchange
        # again (the index IDs and sequences carry over) nor make a conflict.
        before = c.trees()[0]
        marks = {n: c.log_size(n) for n in c.names()}
        c.stop("st0")
        c.start_st(0)
        write(os.path.join(c.sk_dir[0], "after-st-restart.txt"), b"after st0 restarted\n")
        t = c.wait_identical("7a. Syncthing restarted", check=lambda t: "after-st-restart.txt" in t)
        assert conflicts(t) == conflicts(before), f"a conflict after Syncthing restarted: {conflicts(t)}"
        time.sleep(2)
        for n in ("sk0", "sk1"):
            got = c.index_received(n, marks[n], c.st_ids[0])
            log(f"   {n} got {got} records from st0 after its restart (the folder has {len(before)} entries)")
            assert got and max(got) <= 2, f"{n} received {got} records from the restarted Syncthing: a full re-exchange"
        st_log = c.log_text("st0", marks["st0"])
        assert "has a new index ID" not in st_log, "Syncthing saw a new index ID after its restart"
        marks = {n: c.log_size(n) for n in c.names()}
        c.stop("sk1")
        c.start_sk(1)
        write(os.path.join(c.st_dir[1], "after-sk-restart.txt"), b"after sk1 restarted\n")
        t = c.wait_identical("7b. syncctl restarted", check=lambda t: "after-sk-restart.txt" in t)
        assert conflicts(t) == conflicts(before), f"a conflict after syncctl restarted: {conflicts(t)}"
        time.sleep(2)
        for dev in c.st_ids + [c.sk_ids[0]]:
            got = c.index_received("sk1", marks["sk1"], dev)
            log(f"   sk1 got {got} records from {dev[:7]} after its own restart")
            assert got and max(got) <= 2, f"sk1 received {got} records from {dev[:7]} after restarting: a full re-exchange"
        for n in ("st0", "st1"):
            assert "has a new index ID" not in c.log_text(n, marks[n]), f"{n} saw a new index ID after sk1 restarted"
        ok = True
        log("all steps converged")
    except BaseException as e:
        log(f"FAILED: {e}")
        c.dump_logs()
    finally:
        c.stop_all()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
