import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import SyncKit

/// `syncctl status`: what the daemon syncing a folder is doing.
struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show what the daemon syncing a folder is doing.")
    @OptionGroup var folder: FolderOptions
    @Flag(help: "Print JSON for scripts.") var json = false

    func run() throws {
        let status = try fetchStatus(folder)
        if json {
            print(try prettyJSON(status))
            return
        }
        print("node      \(status.name)  \(status.nodeID)")
        print("folder    \(status.folder)")
        print("port      \(status.port)")
        print("state     \(status.inSync ? "in sync" : "syncing")")
        print("files     \(status.files) files, \(formatBytes(status.bytes))\(status.indexSpilled ? " (index in the spill file: more records than --memory-records)" : "")")
        print("peers     \(status.peers.count) connected")
        for p in status.peers {
            print("  \(p.name)  \(p.address)  \(p.caughtUp ? "in sync" : "exchanging index")  sent \(formatBytes(UInt64(p.bytesSent))), received \(formatBytes(UInt64(p.bytesReceived)))")
        }
        print("pulled    \(status.filesPulled) files (\(status.filesMoved) by moving a renamed file): \(formatBytes(UInt64(status.bytesFromNetwork))) from peers, \(formatBytes(UInt64(status.bytesReused))) reused from local files")
        if !status.pulling.isEmpty { print("pulling   \(status.pulling.prefix(10).joined(separator: ", "))\(status.pulling.count > 10 ? " and \(status.pulling.count - 10) more" : "")") }
        for (path, why) in status.failed.sorted(by: { $0.key < $1.key }).prefix(10) { print("waiting   \(path): \(why)") }
        print("conflicts \(status.conflicts) since start, \(status.conflictCopiesPresent) conflict cop\(status.conflictCopiesPresent == 1 ? "y" : "ies") in the folder")
        for c in status.conflictCopies { print("  kept the other version as \(c)") }
        if status.versioning == "none" {
            print("versions  off (run with --versioning to keep what syncs replace or delete)")
        } else {
            print("versions  \(status.versioning): \(status.versionsKept) kept, \(formatBytes(status.versionsBytes)) (syncctl versions list)")
        }
        if !status.recentErrors.isEmpty {
            print("recent errors")
            for e in status.recentErrors { print("  \(e)") }
        }
    }
}

/// `syncctl peers`: the peers the daemon is connected to.
struct Peers: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the peers the daemon syncing a folder is connected to.")
    @OptionGroup var folder: FolderOptions
    @Flag(help: "Print JSON for scripts.") var json = false

    func run() throws {
        let status = try fetchStatus(folder)
        if json {
            print(try prettyJSON(status.peers))
            return
        }
        if status.peers.isEmpty { print("no peers connected") }
        for p in status.peers {
            print("\(p.name)\t\(p.address)\t\(p.nodeID)\t\(p.caughtUp ? "in sync" : "exchanging index")")
        }
    }
}

func fetchStatus(_ folder: FolderOptions) throws -> NodeStatus {
    let state = folder.stateDir ?? folder.absoluteDir + "/.synckit"
    guard let data = askDaemon(stateDirectory: state, command: "status") else {
        throw ValidationError("No syncctl daemon is running for \(folder.absoluteDir) (nothing answers on \(state)/control.sock). Start one with `syncctl run --dir \(folder.dir) ...`.")
    }
    return try JSONDecoder().decode(NodeStatus.self, from: data)
}

func formatBytes(_ n: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(n)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(n) B" : String(format: "%.1f %@", value, units[unit])
}

/// Indented JSON with sorted keys, as `--json` prints it.
func prettyJSON(_ value: some Encodable) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}
