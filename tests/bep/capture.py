#!/usr/bin/env python3
"""Records what a real Syncthing sends over BEP, for ProtocolBEP's decoder tests.

Starts Debian's Syncthing (1.19.2 here) in a network namespace that has only lo, with local and
global discovery, relays, NAT, usage reporting and upgrades off in its config before its first
start, sharing folder `default` with a device whose certificate this script makes (Ed25519,
CN=syncthing, as syncctl's). It then dials Syncthing over TLS 1.3 with ALPN `bep/1.0`, sends a
Hello and a ClusterConfig (hand-encoded protobuf, so this script checks our codec instead of
sharing its code), asks for one block, and writes every byte Syncthing sent, decrypted, to
Tests/ProtocolBEPTests/Fixtures/syncthing-stream.bin, with what was in the folder in
syncthing-stream.json. BEPTranscriptTests decode that stream with ProtocolBEP and compare the
block lists Syncthing announced with the ones we compute from the same bytes.

Not run by CI (the transcript is committed); run it again after a Syncthing upgrade:
    python3 tests/bep/capture.py
"""
import base64, hashlib, json, os, shutil, socket, ssl, struct, subprocess, sys, tempfile, time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "Tests", "ProtocolBEPTests", "Fixtures")
PORT = 22001

def luhn32(s):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    factor, total = 1, 0
    for ch in s:
        addend = factor * alphabet.index(ch)
        factor = 1 if factor == 2 else 2
        total += addend // 32 + addend % 32
    return alphabet[(32 - total % 32) % 32]

def device_id(der):
    b32 = base64.b32encode(hashlib.sha256(der).digest()).decode().rstrip("=")
    groups = [b32[i:i + 13] for i in range(0, 52, 13)]
    full = "".join(g + luhn32(g) for g in groups)
    return "-".join(full[i:i + 7] for i in range(0, 56, 7))

# ---- protobuf, by hand: only what a Hello, a ClusterConfig and a Request need
def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)

def field_varint(num, value):
    return varint(num << 3) + varint(value) if value else b""

def field_bytes(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data if data else b""

def frame(msg_type, body):
    header = field_varint(1, msg_type)
    return struct.pack(">H", len(header)) + header + struct.pack(">I", len(body)) + body

def content(name, size):
    """Deterministic file contents the Swift test can make again from the name and size."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{name}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])

FILES = [("hello.txt", 12), ("empty", 0), ("big.bin", 300 * 1024), ("sub/grüße.txt", 5000)]

def main():
    if os.environ.get("BEP_CAPTURE_IN_NETNS") != "1":
        env = dict(os.environ, BEP_CAPTURE_IN_NETNS="1")
        sys.exit(subprocess.call(["unshare", "-n", sys.executable, os.path.abspath(__file__)], env=env))
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert len(links.strip().splitlines()) == 1, "the namespace must have only lo"

    work = tempfile.mkdtemp(prefix="bep-capture-")
    proc = None
    try:
        home, folder = os.path.join(work, "st"), os.path.join(work, "folder")
        os.makedirs(folder)
        for name, size in FILES:
            path = os.path.join(folder, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(content(name, size))
        os.makedirs(os.path.join(folder, ".stfolder"))

        # Our identity, as syncctl makes it: Ed25519, CN=syncthing.
        cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ed25519", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "3650", "-subj", "/CN=syncthing"], check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"], check=True, capture_output=True).stdout
        ours = device_id(der)

        subprocess.run(["syncthing", "generate", f"--home={home}", "--no-default-folder"], check=True, capture_output=True)
        theirs = subprocess.run(["syncthing", "serve", f"--home={home}", "--device-id"], check=True,
                                capture_output=True, text=True).stdout.strip()
        path = os.path.join(home, "config.xml")
        tree = ET.parse(path)
        cfg = tree.getroot()
        for el in cfg.findall("folder") + cfg.findall("device"):
            cfg.remove(el)
        f = ET.SubElement(cfg, "folder", {"id": "default", "label": "Default Folder", "path": folder, "type": "sendreceive",
                                          "rescanIntervalS": "3600", "fsWatcherEnabled": "false"})
        for dev in (theirs, ours):
            ET.SubElement(f, "device", {"id": dev, "introducedBy": ""})
        for dev, name in ((theirs, "st"), (ours, "capture")):
            d = ET.SubElement(cfg, "device", {"id": dev, "name": name, "compression": "metadata", "introducer": "false"})
            ET.SubElement(d, "address").text = "dynamic"
        opts = cfg.find("options")
        def setopt(name, value):
            for el in opts.findall(name):
                opts.remove(el)
            ET.SubElement(opts, name).text = value
        setopt("listenAddress", f"tcp://127.0.0.1:{PORT}")
        for name, value in [("globalAnnounceEnabled", "false"), ("localAnnounceEnabled", "false"),
                            ("relaysEnabled", "false"), ("natEnabled", "false"), ("urAccepted", "-1"),
                            ("urSeen", "3"), ("autoUpgradeIntervalH", "0"), ("crashReportingEnabled", "false"),
                            ("startBrowser", "false"), ("announceLANAddresses", "false")]:
            setopt(name, value)
        gui = cfg.find("gui")
        gui.set("enabled", "false")
        tree.write(path)

        log = open(os.path.join(work, "syncthing.log"), "wb")
        proc = subprocess.Popen(["syncthing", "serve", f"--home={home}", "--no-browser", "--no-restart", "--no-upgrade"],
                                stdout=log, stderr=log, env=dict(os.environ, STNOUPGRADE="1", STMONITORED="1"))
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        time.sleep(3)  # let the first scan finish, so the Index holds every file

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["bep/1.0"])
        sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", PORT), timeout=10))
        assert sock.selected_alpn_protocol() == "bep/1.0", sock.selected_alpn_protocol()
        peer_der = sock.getpeercert(binary_form=True)
        assert device_id(peer_der) == theirs

        hello = field_bytes(1, "capture") + field_bytes(2, "syncctl") + field_bytes(3, "v0.0.0-capture")
        sock.sendall(struct.pack(">IH", 0x2EA7D90B, len(hello)) + hello)
        their_raw = hashlib.sha256(peer_der).digest()
        our_raw = hashlib.sha256(der).digest()
        devices = b"".join(field_bytes(16, field_bytes(1, raw) + field_bytes(2, name) + field_bytes(5, "syncthing"))
                           for raw, name in ((their_raw, "st"), (our_raw, "capture")))
        cc = field_bytes(1, field_bytes(1, "default") + field_bytes(2, "Default Folder") + devices)

        stream = bytearray()
        sent_cc = sent_request = False
        got = {}
        deadline = time.time() + 30
        pos = None  # where the first post-Hello frame starts
        while time.time() < deadline:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                chunk = b""
            if chunk:
                stream += chunk
            if pos is None and len(stream) >= 6:
                n = struct.unpack(">H", stream[4:6])[0]
                if len(stream) >= 6 + n:
                    pos = 6 + n
                    sock.sendall(frame(0, cc))
                    sent_cc = True
            while pos is not None and len(stream) >= pos + 2:
                hl = struct.unpack(">H", stream[pos:pos + 2])[0]
                if len(stream) < pos + 2 + hl + 4:
                    break
                ml = struct.unpack(">I", stream[pos + 2 + hl:pos + 6 + hl])[0]
                if len(stream) < pos + 6 + hl + ml:
                    break
                header = stream[pos + 2:pos + 2 + hl]
                mtype = header[1] if len(header) >= 2 and header[0] == 0x08 else 0
                got[mtype] = got.get(mtype, 0) + 1
                pos += 6 + hl + ml
            if got.get(1) and not sent_request:
                # The second block of big.bin: offset 128 KiB, 128 KiB long, with its hash.
                data = content("big.bin", 300 * 1024)[131072:262144]
                req = (field_varint(1, 77) + field_bytes(2, "default") + field_bytes(3, "big.bin") + field_varint(4, 131072)
                       + field_varint(5, 131072) + field_bytes(6, hashlib.sha256(data).digest()) + field_varint(9, 1))
                sock.sendall(frame(3, req))
                sent_request = True
            if got.get(4):
                break
        assert sent_cc and got.get(0) and got.get(1) and got.get(4), f"incomplete transcript: {got}"
        sock.close()

        os.makedirs(OUT, exist_ok=True)
        with open(os.path.join(OUT, "syncthing-stream.bin"), "wb") as f:
            f.write(bytes(stream[:pos]))
        version = subprocess.run(["syncthing", "--version"], capture_output=True, text=True).stdout.strip()
        with open(os.path.join(OUT, "syncthing-stream.json"), "w") as f:
            json.dump({"syncthing": version, "syncthingDeviceID": theirs, "ourDeviceID": ours,
                       "folder": "default", "files": [{"name": n, "size": s} for n, s in FILES],
                       "request": {"id": 77, "name": "big.bin", "offset": 131072, "size": 131072},
                       "messages": {str(k): v for k, v in sorted(got.items())}}, f, indent=2)
            f.write("\n")
        print(f"captured {pos} bytes from {version}: message counts by type {got}")
    finally:
        if proc:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    main()
