import Foundation
import Yams

/// `--config FILE`: the same keys as the flags of `syncctl run`, in YAML or JSON (JSON is YAML).
///
/// ```yaml
/// dir: /srv/share
/// port: 22000
/// peer: [10.0.0.2:22000, nas.local:22000]
/// policy: keep-both
/// log-level: debug
/// ```
///
/// The file is turned into flags placed before the ones typed on the command line, so a flag
/// given there wins over the file (for lists such as `peer`, both add up).
///
/// A library target of its own (not part of `syncctl`) so that the fuzz target `config`
/// (Fuzz/, scripts/fuzz.sh) can link it; `flags(fromText:path:)` takes the file's text, so the
/// fuzzer needs no files.
public enum ConfigFile {
    /// Why a config file was refused: one sentence for the user.
    public struct Problem: Error, CustomStringConvertible {
        public var description: String
    }

    /// Keys `run` accepts, and whether each is a switch.
    public static let keys: [String: Bool] = [
        "dir": false, "state-dir": false, "port": false, "bind": false, "name": false, "discovery": false,
        "peer": false, "peers-file": false, "policy": false, "no-conflict-copies": true, "pull-order": false,
        "cluster": false, "cluster-key-file": false, "log": false, "log-level": false, "rescan-interval": false,
        "no-watch": true, "memory-records": false, "metrics-address": false, "interface": false, "open": true, "trust": false, "trust-file": false,
        "insecure-plaintext": true, "folder-id": false, "no-bep": true,
        "versioning": false, "versions-keep": false, "versions-max-age": false, "versions-cleanup-interval": false,
        "versions-max-size": false,
        "gui-address": false, "no-gui": true, "gui-api-key": false, "gui-tls": true,
    ]

    /// The command line with the flags of the file named by `--config` (of `run` only) put
    /// right after `run`; other command lines come back unchanged.
    public static func expand(_ arguments: [String]) throws -> [String] {
        guard let first = arguments.first, first == "run" else { return arguments }
        var path: String?
        for (i, a) in arguments.enumerated() {
            if a == "--config", i + 1 < arguments.count { path = arguments[i + 1] }
            if a.hasPrefix("--config=") { path = String(a.dropFirst("--config=".count)) }
        }
        guard let path else { return arguments }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw Problem(description: "cannot read the config file \(path)")
        }
        return [first] + (try flags(fromText: text, path: path)) + arguments.dropFirst()
    }

    /// The flags a config file's `text` stands for, in key order (`path` is for messages only).
    /// Throws `Problem` for text that is not YAML or JSON, not a mapping, or has an unknown key.
    public static func flags(fromText text: String, path: String) throws -> [String] {
        // Shapes Yams cannot take (it would trap, overflow the stack or hang): see YAMLShape.
        if let problem = YAMLShape.problem(in: text) {
            throw Problem(description: "the config file \(path) \(problem)")
        }
        let loaded: Any?
        do { loaded = try Yams.load(yaml: text) } catch {
            throw Problem(description: "the config file \(path) is not valid YAML or JSON: \(error)")
        }
        guard let map = loaded as? [String: Any] else {
            throw Problem(description: "the config file \(path) must be a mapping of flag names to values (for example `port: 22000`)")
        }
        var flags = [String]()
        for (key, value) in map.sorted(by: { $0.key < $1.key }) {
            let name = key == "peers" ? "peer" : key
            guard let isSwitch = keys[name] else {
                throw Problem(description: "unknown key '\(key)' in \(path); the keys are the flags of `syncctl run`: \(keys.keys.sorted().joined(separator: ", "))")
            }
            if isSwitch {
                guard let on = value as? Bool else { throw Problem(description: "'\(key)' in \(path) must be true or false") }
                if on { flags.append("--\(name)") }
            } else if let list = value as? [Any] {
                for item in list { flags += ["--\(name)", "\(item)"] }
            } else {
                flags += ["--\(name)", "\(value)"]
            }
        }
        return flags
    }
}
