#!/usr/bin/env python3
"""Browser test of the dashboard served by `syncctl run` (docs/REST-API.md).

Starts a real 3-node cluster of `syncctl run` on 127.0.0.1 (static discovery only, never
multicast), opens node 0's dashboard in headless Chromium through Selenium and checks, with
screenshots at desktop (1280x900) and phone (390x844) size at each stage:

  1. the page loads with the key from `syncctl gui-url`, without a single SEVERE console entry,
     and shows both peers connected;
  2. while node 0 pulls a large file written on node 1, a `.transfer` shows a progress bar
     strictly between 0 and 100 %;
  3. a conflict made on purpose (node 2 stopped, the same file edited on node 1 and node 2,
     node 2 started again) shows up as a `.conflict` with both versions side by side; clicking
     "Keep the other" reaches every node: the copy is gone everywhere and the original holds
     the chosen content.

Usage: SYNCCTL=/path/to/syncctl python3 tests/gui/browser_test.py  (tests/gui/run.sh does it).
Exit status 0 when every check held; otherwise 1, with the nodes' last log lines.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "gui" / "out"
DESKTOP = (1280, 900)
PHONE = (390, 844)
T_START = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T_START:6.1f}s] {msg}", flush=True)


class TestFailure(Exception):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise TestFailure(what)
    log(f"ok: {what}")


def wait_for(what: str, fn, timeout: float, interval: float = 0.2):
    """Calls fn until it returns something truthy (returned), or fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    last_err = None
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except TestFailure:
            raise
        except Exception as e:  # a node not up yet, an element not there yet: try again
            last_err = e
        time.sleep(interval)
    raise TestFailure(f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last error: {last_err})" if last_err else ""))


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ---------------------------------------------------------------------------------------------
# The cluster: one `syncctl run` per node, each with its own folder, state dir, sync port and
# dashboard port; every node lists the other two as static peers.
# ---------------------------------------------------------------------------------------------
class Node:
    def __init__(self, idx: int, work: Path, port: int, gui_port: int):
        self.idx = idx
        self.name = f"node{idx}"
        self.folder = work / f"folder{idx}"
        self.state = work / f"state{idx}"
        self.logfile = work / f"{self.name}.log"
        self.port = port
        self.gui_port = gui_port
        self.proc: subprocess.Popen | None = None
        self.key: str | None = None
        self.folder.mkdir()
        self.state.mkdir()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.gui_port}"


class Cluster:
    def __init__(self, syncctl: str, work: Path):
        self.syncctl = syncctl
        self.work = work
        ports = free_ports(6)
        self.nodes = [Node(i, work, ports[i], ports[3 + i]) for i in range(3)]
        self.keyfile = work / "cluster.key"
        self.keyfile.write_text(secrets.token_hex(32) + "\n")
        os.chmod(self.keyfile, 0o600)

    def args(self, n: Node) -> list[str]:
        a = [self.syncctl, "run", "--dir", str(n.folder), "--state-dir", str(n.state),
             "--port", str(n.port), "--bind", "127.0.0.1", "--discovery", "static",
             "--name", n.name, "--cluster-key-file", str(self.keyfile),
             "--log", "stderr", "--log-level", "info",
             "--versioning", "trashcan",
             "--gui-address", f"127.0.0.1:{n.gui_port}"]
        for o in self.nodes:
            if o is not n:
                a += ["--peer", f"127.0.0.1:{o.port}"]
        return a

    def start(self, n: Node) -> None:
        env = dict(os.environ)
        env.pop("SYNCKIT_CLUSTER_KEY", None)  # the key file is the one key
        with open(n.logfile, "ab") as lf:
            lf.write(f"---- start {' '.join(self.args(n))}\n".encode())
            lf.flush()
            n.proc = subprocess.Popen(self.args(n), stdin=subprocess.DEVNULL, stdout=lf, stderr=lf, env=env,
                                      cwd=self.work, start_new_session=True)
        log(f"started {n.name} (pid {n.proc.pid}, sync port {n.port}, dashboard {n.base})")

    def stop(self, n: Node, timeout: float = 15) -> None:
        """SIGTERM to this node's process only (by PID), SIGKILL if it does not exit in time."""
        p = n.proc
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{n.name} ignored SIGTERM for {timeout:.0f} s: SIGKILL")
                p.kill()
                p.wait(5)
        n.proc = None

    def stop_all(self) -> None:
        for n in self.nodes:
            try:
                self.stop(n)
            except Exception as e:
                log(f"stopping {n.name}: {e}")

    def wait_healthy(self, n: Node, timeout: float = 30) -> None:
        def up():
            if n.proc is not None and n.proc.poll() is not None:
                raise TestFailure(f"{n.name} exited with status {n.proc.returncode}")
            with urllib.request.urlopen(n.base + "/rest/health", timeout=2) as r:
                return json.load(r).get("ok") is True
        wait_for(f"{n.name}'s /rest/health", up, timeout)

    def gui_url(self, n: Node) -> str:
        """The dashboard link with the key, as `syncctl gui-url` prints it; the key file when
        the command does not answer (it is the same key)."""
        tries = [["--dir", str(n.folder), "--state-dir", str(n.state)],
                 ["--folder", str(n.folder), "--state-dir", str(n.state)],
                 ["--dir", str(n.folder)], ["--folder", str(n.folder)]]
        for extra in tries:
            r = subprocess.run([self.syncctl, "gui-url", *extra], capture_output=True, text=True, timeout=20)
            m = re.search(r"(https?://\S+)#key=([0-9A-Za-z]+)", r.stdout)
            if r.returncode == 0 and m:
                n.key = m.group(2)
                url = m.group(0)
                log(f"{n.name}: syncctl gui-url {' '.join(extra)} -> {m.group(1)}#key=<{len(n.key)} chars>")
                if not url.startswith(n.base):
                    log(f"note: gui-url printed {m.group(1)}, the node listens on {n.base}")
                return url
        keyfile = n.state / "gui-api-key"
        n.key = keyfile.read_text().strip()
        log(f"{n.name}: `syncctl gui-url` gave no link ({r.stderr.strip()[:200]!r}); key read from {keyfile}")
        return f"{n.base}/#key={n.key}"

    def rest(self, n: Node, path: str):
        req = urllib.request.Request(n.base + path, headers={"X-API-Key": n.key or ""})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)

    def tails(self, lines: int = 25) -> str:
        out = []
        for n in self.nodes:
            try:
                text = n.logfile.read_text(errors="replace").splitlines()
            except OSError:
                text = []
            out.append(f"---- {n.name} ({n.logfile}), last {lines} lines:")
            out += text[-lines:]
        return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# The browser.
# ---------------------------------------------------------------------------------------------
class Browser:
    def __init__(self):
        o = Options()
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--hide-scrollbars", "--no-first-run", "--disable-extensions",
                  "--disable-background-networking", "--disable-component-update"):
            o.add_argument(a)
        if os.path.exists("/usr/bin/chromium"):
            o.binary_location = "/usr/bin/chromium"
        # Every console entry is recorded; only SEVERE ones fail the test.
        o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
        self.d = webdriver.Chrome(service=Service(driver_path), options=o)
        self.d.set_window_size(*DESKTOP)
        self.console: list[dict] = []
        self.shots: list[Path] = []

    def drain_console(self) -> list[dict]:
        """Console entries since the last call, all of them kept in self.console."""
        new = self.d.get_log("browser")
        self.console += new
        return new

    def severe(self) -> list[dict]:
        self.drain_console()
        return [e for e in self.console if e.get("level") == "SEVERE"]

    def js(self, script: str, *args):
        return self.d.execute_script(script, *args)

    def shot(self, name: str, sizes=(("desktop", DESKTOP), ("phone", PHONE)), focus: str | None = None) -> None:
        """Screenshots of the viewport at each size, then back to desktop size. With focus (a CSS
        selector), the page is scrolled to put that element at the top when it is not in view
        (on a phone the folder card alone fills the first screen)."""
        for label, (w, h) in sizes:
            self.set_viewport(w, h)
            self.js("window.scrollTo(0, 0)")
            if focus:
                self.js("""const e = document.querySelector(arguments[0]);
                           if (e && e.getBoundingClientRect().bottom > window.innerHeight) e.scrollIntoView({block: 'start'});""", focus)
            time.sleep(0.4)  # a frame or two for the layout to settle
            p = OUT / f"{name}-{label}.png"
            self.d.save_screenshot(str(p))
            self.shots.append(p)
            overflow = self.js("return document.documentElement.scrollWidth - window.innerWidth")
            if overflow > 0:
                raise TestFailure(f"{p.name}: the page scrolls sideways by {overflow} px at {w}x{h}")
        self.set_viewport(*DESKTOP)
        self.js("window.scrollTo(0, 0)")

    def set_viewport(self, w: int, h: int) -> None:
        """Sizes the window so that the page's viewport (innerWidth x innerHeight) is w x h."""
        self.d.set_window_size(w, h)
        iw, ih = self.js("return [window.innerWidth, window.innerHeight]")
        if (iw, ih) != (w, h):
            size = self.d.get_window_size()
            self.d.set_window_size(size["width"] + (w - iw), size["height"] + (h - ih))

    def quit(self):
        try:
            self.d.quit()
        except Exception:
            pass


def write_random(path: Path, size: int) -> str:
    """Writes size random bytes to path; returns their SHA-256."""
    h = hashlib.sha256()
    chunk = 8 << 20
    with open(path, "wb") as f:
        left = size
        while left > 0:
            b = os.urandom(min(chunk, left))
            h.update(b)
            f.write(b)
            left -= len(b)
    return h.hexdigest()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(8 << 20):
            h.update(b)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# The test.
# ---------------------------------------------------------------------------------------------
def watch_transfer(cluster: Cluster, br: Browser, name: str, mib: int) -> list[float]:
    """Writes mib MiB of random data as `name` on node 1 and watches node 0's page until every
    node has it whole. Returns the percentages seen strictly between 0 and 100 on the page's
    `.transfer[data-path=name]` bar, with screenshots at the first such moment."""
    n0, n1, _ = cluster.nodes
    size = mib << 20
    staging = cluster.work / (name + ".staging")
    t = time.monotonic()
    digest = write_random(staging, size)
    log(f"wrote {mib} MiB of random data in {time.monotonic() - t:.1f} s; moving it into node 1's folder as {name}")
    t = time.monotonic()
    os.rename(staging, n1.folder / name)  # appears at once, whole (same file system)
    seen: list[float] = []
    phone_done = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        # The bar's value, read in one script: a <progress> (or a .bar with a width).
        vals = br.js("""return Array.from(document.querySelectorAll('#transfers .transfer'))
                .filter(t => t.dataset.path === arguments[0]).map(t => {
                    const p = t.querySelector('progress');
                    if (p) return p.max > 0 ? 100 * p.value / p.max : null;
                    const b = t.querySelector('.bar');
                    return b ? parseFloat(b.style.width) : null; });""", name)
        mid = [v for v in vals if v is not None and 0 < v < 100]
        seen += mid
        if mid and len(seen) == len(mid):
            # The first moment in flight: the desktop shot first (the transfer may end soon).
            br.shot("02-transfer", sizes=(("desktop", DESKTOP),), focus="#transfers")
            log(f"in flight at {mid[0]:.1f} %: screenshot taken")
            continue
        if mid and not phone_done:
            br.shot("02-transfer", sizes=(("phone", PHONE),), focus="#transfers")
            phone_done = True
            continue
        p = n0.folder / name
        if not vals and p.exists() and p.stat().st_size == size:
            break
        time.sleep(0.1)
    log(f"node 0 had {name} after {time.monotonic() - t:.1f} s")
    for n in cluster.nodes:
        p = n.folder / name
        wait_for(f"{name} whole on {n.name}", lambda p=p: p.exists() and p.stat().st_size == size, 120)
    check(sha256(n0.folder / name) == digest, f"node 0's {name} has the content written on node 1")
    return seen


def run(cluster: Cluster, br: Browser, big_mib: int) -> None:
    n0, n1, n2 = cluster.nodes
    for n in cluster.nodes:
        cluster.start(n)
    for n in cluster.nodes:
        cluster.wait_healthy(n)
    url = cluster.gui_url(n0)
    for n in (n1, n2):
        cluster.gui_url(n)

    # A small probe: the API answers with the key and refuses without it.
    try:
        urllib.request.urlopen(n0.base + "/rest/status", timeout=5)
        raise TestFailure("/rest/status answered without the API key")
    except urllib.error.HTTPError as e:
        check(e.code == 401, f"/rest/status without the key is 401 (got {e.code})")

    wait_for("node 0 to see both peers connected (REST)",
             lambda: sum(1 for p in cluster.rest(n0, "/rest/peers") if p.get("connected")) == 2, 45)

    # ---- Stage 1: the page loads, without console errors, with both peers connected.
    log(f"opening {url.split('#')[0]}#key=<key>")
    br.d.get(url)
    wait_for("the folder state badge", lambda: br.js(
        "const e = document.getElementById('folder-state'); return e && /^(idle|syncing|scanning|paused)$/.test(e.textContent.trim().toLowerCase())"), 20)
    check("key=" not in br.d.current_url, "the key is gone from the address bar")
    check(br.js("return !!sessionStorage.getItem('synckit-api-key')"), "the key is kept in sessionStorage")
    check(br.js("return document.getElementById('key-form').hidden"), "the key form is hidden")
    wait_for("two .peer.connected in #peers", lambda: len(br.d.find_elements(By.CSS_SELECTOR, "#peers .peer.connected")) == 2, 30)
    # Read in one script: the page redraws lists while Selenium looks at them.
    ids = set(br.js("return Array.from(document.querySelectorAll('#peers .peer.connected'), e => e.dataset.nodeId)"))
    rest_ids = {p["nodeID"] for p in cluster.rest(n0, "/rest/peers") if p.get("connected")}
    check(ids == rest_ids, "the connected peers on the page are those /rest/peers names")
    wait_for("the live indicator", lambda: br.js("return document.getElementById('conn').className === 'live'"), 15)
    pct = br.js("return document.getElementById('folder-percent').textContent")
    log(f"folder state {br.d.find_element(By.ID, 'folder-state').text!r}, in sync {pct!r}")
    br.shot("01-connected")

    # The folder's buttons: Pause turns the badge to "paused" (and the node says so), Resume
    # turns it back; Rescan is accepted.
    br.d.find_element(By.ID, "pause").click()
    wait_for("the badge to say paused", lambda: br.js("return document.getElementById('folder-state').textContent.trim().toLowerCase()") == "paused", 10)
    check(cluster.rest(n0, "/rest/status").get("paused") is True, "Pause reached the node (/rest/status paused)")
    wait_for("the button to offer Resume", lambda: br.js("return document.getElementById('pause').textContent.trim()") == "Resume", 5)
    br.d.find_element(By.ID, "pause").click()
    wait_for("the badge to leave paused", lambda: br.js("return document.getElementById('folder-state').textContent.trim().toLowerCase()") != "paused", 10)
    check(cluster.rest(n0, "/rest/status").get("paused") is False, "Resume reached the node")
    br.d.find_element(By.ID, "rescan").click()
    wait_for("the Rescan button back", lambda: br.js("const b = document.getElementById('rescan'); return !b.disabled && b.textContent === 'Rescan'"), 10)
    sev = br.severe()
    check(not sev, f"no SEVERE console entries after loading (got {sev})")

    # ---- Stage 2: a large file written on node 1; node 0's dashboard shows it in flight.
    # syncctl has no rate limit to slow a pull down, so the file is made large enough to take
    # a few seconds on loopback; should a fast machine pull it between two of the page's
    # half-second updates, a file three times larger is tried once more.
    seen: list[float] = []
    for attempt, mib in enumerate((big_mib, min(3 * big_mib, 2048))):
        name = "big.bin" if attempt == 0 else f"big{attempt + 1}.bin"
        seen = watch_transfer(cluster, br, name, mib)
        if seen:
            break
        log(f"{name} ({mib} MiB) was never seen in flight on the page; trying a larger file")
    check(bool(seen), f"node 0's dashboard showed {name} in flight strictly between 0 and 100 % "
                      f"(seen {len(seen)} times, from {min(seen) if seen else 0:.1f} to {max(seen) if seen else 0:.1f} %)")
    wait_for("no transfers left on the page", lambda: not br.d.find_elements(By.CSS_SELECTOR, "#transfers .transfer"), 30)
    wait_for("the page to say 100 % in sync",
             lambda: br.js("return document.getElementById('folder-percent').textContent.trim()") == "100%", 30)
    br.shot("03-after-transfer", focus="#peers")
    sev = br.severe()
    check(not sev, f"no SEVERE console entries during the transfer (got {sev})")

    # ---- Stage 3: a conflict. notes.txt everywhere; node 2 stopped; edited on node 1 and on
    # node 2's folder; node 2 started again: its edit and node 1's are concurrent.
    base = b"shopping list\n- milk\n"
    # Also a name full of markup: the page must show it as text, never run it.
    evil = '<img src=x onerror="window.__xss=1">&amp;.txt'
    (n1.folder / evil).write_bytes(b"<script>window.__xss=2</script>\n")
    (n1.folder / "notes.txt").write_bytes(base)
    for n in cluster.nodes:
        wait_for(f"notes.txt on {n.name}", lambda n=n: (n.folder / "notes.txt").exists()
                 and (n.folder / "notes.txt").read_bytes() == base, 30)
    cluster.stop(n2)
    log("node 2 stopped")
    a = b"shopping list\n- milk\n- bread (from node 1)\n"
    b = b"shopping list\n- milk\n- eggs\n- coffee (from node 2)\n"
    (n1.folder / "notes.txt").write_bytes(a)
    wait_for("node 1's edit on node 0", lambda: (n0.folder / "notes.txt").read_bytes() == a, 30)
    (n2.folder / "notes.txt").write_bytes(b)
    cluster.start(n2)
    cluster.wait_healthy(n2)

    def copies(n: Node) -> list[str]:
        return sorted(os.path.basename(p) for p in glob.glob(str(n.folder / "notes.sync-conflict-*")))
    wait_for("a conflict copy of notes.txt on node 0", lambda: copies(n0), 60)
    wait_for("a .conflict on the page", lambda: br.d.find_elements(By.CSS_SELECTOR, "#conflicts .conflict"), 30)
    # The page's view of the conflict, read in one script each time (a refetch may redraw it):
    # the copy's name, each side's rectangle and preview text.
    snap_js = """const c = document.querySelector('#conflicts .conflict');
        if (!c) return null;
        return {copy: c.dataset.copy,
                sides: Array.from(c.querySelectorAll('.side'), s => {
                    const r = s.getBoundingClientRect();
                    const pre = s.querySelector('pre');
                    return {x: r.left, y: r.top, width: r.width, text: pre ? pre.textContent : ''}; })};"""
    snap = br.js(snap_js)
    copy = snap["copy"]
    log(f"conflict on the page: data-copy={copy!r}; copies on node 0: {copies(n0)}")
    check(copy in copies(n0), "the page's conflict copy is the one in node 0's folder")
    # Both previews loaded, side by side at desktop size.
    snap = wait_for("both previews", lambda: (lambda s: s if s and len(s["sides"]) == 2 and all(
        x["text"].strip() and x["text"].strip() != "Loading…" for x in s["sides"]) else None)(br.js(snap_js)), 20)
    check(len(snap["sides"]) == 2, "the conflict shows two versions")
    r0, r1 = snap["sides"]
    check(abs(r0["y"] - r1["y"]) < 2 and r1["x"] >= r0["x"] + r0["width"] - 1,
          f"the two versions are side by side at desktop size (x {r0['x']:.0f} and {r1['x']:.0f}, y {r0['y']:.0f} and {r1['y']:.0f})")
    texts = [x["text"] for x in snap["sides"]]
    copy_bytes = (n0.folder / copy).read_bytes()
    orig_bytes = (n0.folder / "notes.txt").read_bytes()
    check({copy_bytes, orig_bytes} == {a, b}, "the original and the copy hold the two edits")
    check(texts[0].strip() == orig_bytes.decode().strip() and texts[1].strip() == copy_bytes.decode().strip(),
          "the previews show the original's and the copy's text")
    conflict_seen = cluster.rest(n0, "/rest/conflicts")
    br.shot("04-conflict", focus="#conflicts-card")

    # "Keep the other": the copy's content replaces the original everywhere. The button is
    # found afresh right before the click.
    def click_keep_copy():
        btn = br.d.find_element(By.CSS_SELECTOR, f'#conflicts .conflict[data-copy="{copy}"] .keep-copy')
        br.js("arguments[0].scrollIntoView({block: 'center'})", btn)
        btn.click()
        return True
    wait_for("a click on .keep-copy", click_keep_copy, 10)
    log("clicked 'Keep the other' (.keep-copy)")
    for n in cluster.nodes:
        wait_for(f"{n.name}: no conflict copy left and notes.txt holding the kept content",
                 lambda n=n: not copies(n) and not (n.folder / copy).exists()
                 and (n.folder / "notes.txt").read_bytes() == copy_bytes, 60)
    log("the choice reached every node")
    wait_for("no .conflict left on the page", lambda: not br.d.find_elements(By.CSS_SELECTOR, "#conflicts .conflict"), 30)
    wait_for("the page's changes list to name notes.txt",
             lambda: br.d.find_elements(By.CSS_SELECTOR, '#changes .change[data-path="notes.txt"]'), 20)
    wait_for("both peers connected again on the page",
             lambda: len(br.d.find_elements(By.CSS_SELECTOR, "#peers .peer.connected")) == 2, 30)
    br.shot("05-resolved", focus="#changes")
    n_versions = len(br.d.find_elements(By.CSS_SELECTOR, "#versions .version"))
    log(f"versions listed on the page: {n_versions}")
    spec_notes(cluster, n0, conflict_seen)
    wait_for("the markup-named file on node 0", lambda: (n0.folder / evil).exists(), 20)
    wait_for("the markup-named file listed as text in #changes", lambda: br.js(
        "return Array.from(document.querySelectorAll('#changes .change'), c => c.dataset.path).includes(arguments[0])", evil), 20)
    check(br.js("return window.__xss === undefined && !document.querySelector('#changes img, #changes script')"),
          "a file name with markup is shown as text (no element made from it, nothing run)")
    sev = br.severe()
    check(not sev, f"no SEVERE console entries in the whole run (got {sev})")


def spec_notes(cluster: Cluster, n: Node, conflicts) -> None:
    """Saves node 0's REST answers in tests/gui/out/rest-node0.json (to look at after a run) and
    prints a note for each field that differs from docs/REST-API.md. Notes do not fail the test:
    the page copes with them; they are for whoever owns the server."""
    dump = {p: cluster.rest(n, p) for p in ("/rest/status", "/rest/peers", "/rest/transfers", "/rest/changes", "/rest/versions")}
    dump["/rest/conflicts (while there was one)"] = conflicts
    (OUT / "rest-node0.json").write_text(json.dumps(dump, indent=2) + "\n")
    notes = []
    st = dump["/rest/status"]
    for k in ("nodeID", "name", "folder", "state", "paused", "files", "bytes", "needFiles", "needBytes", "percentInSync",
              "lastScan", "inSync", "conflictCopiesPresent", "versioning", "versionsKept", "peers"):
        if k not in st:
            notes.append(f"/rest/status has no '{k}'")
    for p in dump["/rest/peers"]:
        for k in ("nodeID", "shortID", "name", "address", "connected", "protocol", "bytesIn", "bytesOut", "rateIn", "rateOut",
                  "caughtUp", "pullFiles", "pullBytes"):
            if k not in p:
                notes.append(f"/rest/peers entry has no '{k}'")
    actions = {c.get("action") for c in dump["/rest/changes"]}
    odd = actions - {"changed", "deleted", "conflict", "resolved", "restored"}
    if odd:
        notes.append(f"/rest/changes actions outside the documented set: {sorted(odd)}")
    for c in dump["/rest/changes"]:
        for k in ("time", "path", "action", "origin", "by", "byName"):
            if k not in c:
                notes.append(f"/rest/changes entry has no '{k}'")
    for c in conflicts:
        for k in ("copy", "original", "copyInfo", "originalInfo"):
            if k not in c:
                notes.append(f"/rest/conflicts entry has no '{k}'")
    v = dump["/rest/versions"]
    if not isinstance(v, dict) or not isinstance(v.get("versions"), list):
        notes.append("/rest/versions is not {\"versions\": [...]}")
    for note in dict.fromkeys(notes):
        log(f"note (spec): {note}")
    log(f"REST answers saved in {(OUT / 'rest-node0.json').relative_to(REPO)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--syncctl", default=os.environ.get("SYNCCTL"), help="the syncctl binary (default $SYNCCTL)")
    ap.add_argument("--big-mib", type=int, default=int(os.environ.get("GUI_TEST_BIG_MIB", "512")),
                    help="size of the large file in MiB (default 512)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    if not a.syncctl or not os.access(a.syncctl, os.X_OK):
        print("browser_test.py: no syncctl binary (set SYNCCTL or pass --syncctl)", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.png"):
        old.unlink()
    # A SIGTERM (a CI timeout) unwinds like Ctrl-C, so the finally below still stops the nodes
    # and the browser this test started.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    work = Path(tempfile.mkdtemp(prefix="synckit-gui-"))
    log(f"syncctl {a.syncctl}; work dir {work}")
    cluster = Cluster(str(Path(a.syncctl).resolve()), work)
    br = None
    ok = False
    try:
        br = Browser()
        run(cluster, br, a.big_mib)
        ok = True
    except (Exception, KeyboardInterrupt) as e:
        log(f"FAILED: {type(e).__name__}: {e}")
        if br is not None:
            try:
                br.shot("99-failure")
            except Exception:
                pass
            try:
                br.drain_console()
                for e2 in br.console[-20:]:
                    print("console:", e2)
            except Exception:
                pass
    finally:
        if br is not None:
            br.quit()
        cluster.stop_all()
        if not ok:
            print(cluster.tails(), flush=True)
        if a.keep or not ok and os.environ.get("GUI_TEST_KEEP_ON_FAILURE"):
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("screenshots:")
    for p in (br.shots if br else []):
        if p.exists():
            print(f"  {p.relative_to(REPO)}  {p.stat().st_size:,} bytes")
    log("PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
