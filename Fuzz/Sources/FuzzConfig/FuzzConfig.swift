// libFuzzer target `config`: the `--config FILE` loader of syncctl (`ConfigFile.flags`, YAML or
// JSON through Yams). The input is the file's text; syncctl reads files as UTF-8, so input that
// is not UTF-8 never reaches the loader and is skipped. A `ConfigFile.Problem` is the expected
// answer to a bad file; whatever is accepted must come out as `--key` flags of `syncctl run`.
import FuzzMain
import Glibc
import SyncCtlConfig

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    guard let text = String(validating: bytes, as: UTF8.self) else { return 0 }
    let flags: [String]
    do {
        flags = try ConfigFile.flags(fromText: text, path: "fuzz.yaml")
    } catch is ConfigFile.Problem {
        return 0
    } catch {
        preconditionFailure("the config loader threw something other than ConfigFile.Problem: \(error)")
    }
    // Every flag the file makes is a known key, a switch alone or an option with its value.
    var i = 0
    while i < flags.count {
        let flag = flags[i]
        precondition(flag.hasPrefix("--"), "a config file made the argument \(flag.debugDescription) where a flag belongs")
        guard let isSwitch = ConfigFile.keys[String(flag.dropFirst(2))] else {
            preconditionFailure("a config file made the unknown flag \(flag)")
        }
        i += isSwitch ? 1 : 2
    }
    precondition(i == flags.count, "a config file made an option without a value")
    return 0
}

/// The entry point: libFuzzer's driver with this file's test function, or `--write-seeds DIR`
/// (see `runFuzzer` in Fuzz/Sources/FuzzMain).
@main
enum Main {
    static func main() { runFuzzer(fuzzConfig, seeds: seeds) }
}

// MARK: seeds

/// Config files: the README's example, JSON, every key, flow and block lists, anchors, several
/// documents, and a few the loader refuses (unknown key, a switch that is not a bool, a list).
func seeds() -> [(String, [UInt8])] {
    let files: [(String, String)] = [
        ("readme.yaml", "dir: /srv/share\nport: 22000\npeer: [10.0.0.2:22000, nas.local:22000]\npolicy: keep-both\nlog-level: debug\n"),
        ("all-keys.yaml", """
            dir: ~/Shared
            state-dir: /var/lib/synckit
            port: 22000
            bind: 0.0.0.0
            name: laptop
            discovery: static
            peers:
              - 192.168.1.20:22000
              - nas.local:22000
            peers-file: /etc/synckit/peers
            policy: newest
            no-conflict-copies: true
            pull-order: smallest-first
            cluster: home
            cluster-key-file: /etc/synckit/key
            log: stderr
            log-level: info
            rescan-interval: 60
            no-watch: false
            metrics-address: 127.0.0.1:9464
            interface: eth0

            """),
        ("config.json", #"{"dir": "/srv/share", "port": 22000, "peer": ["a:1", "b:2"], "no-watch": true, "name": "n\u00e9"}"#),
        ("anchors.yaml", "base: &b 22000\nport: *b\n"),
        ("anchor-list.yaml", "peer: &p [a:1, b:2]\ndir: /x\n"),
        ("multi-doc.yaml", "---\ndir: /a\n---\ndir: /b\n"),
        ("quoted.yaml", "dir: '/srv/with space'\nname: \"tab\\there\"\nport: 0x55F0\nrescan-interval: 1e3\n"),
        ("block-scalar.yaml", "name: |\n  two\n  lines\ndir: >\n  folded\n  text\n"),
        ("tags.yaml", "port: !!str 22000\nno-watch: !!bool yes\ndir: !!binary aGVsbG8=\n"),
        ("bad-key.yaml", "dir: /x\nbogus: 1\n"),
        ("bad-switch.yaml", "no-watch: maybe\n"),
        ("not-a-map.yaml", "- dir\n- /x\n"),
        ("nested.yaml", "peer: [[a, b], {c: d}, ~, null]\n"),
        ("empty.yaml", ""),
    ]
    return files.map { ($0.0, Array($0.1.utf8)) }
}
