import ArgumentParser
import DiscoveryStatic
import Foundation
import Logging
import ServiceLifecycle
import SyncKit
import TransportTCP

/// `syncctl demo`: a whole cluster on this machine, to see SyncKit work in a minute.
///
/// It makes one folder per node, seeds each with its own files (text and binary, nested
/// folders, and one name present on two nodes with different contents, to show the conflict
/// policy), starts the nodes on 127.0.0.1 with static discovery, shows progress until they
/// agree, prints what each folder holds, and keeps syncing until Ctrl-C so you can drop files in.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a local cluster of N nodes in one process and watch them converge.",
        discussion: """
            Example:
              syncctl demo --nodes 4 --dir /tmp/synckit-demo
            Then, in another terminal, add, edit, rename or delete files in any node's folder and
            watch the others follow. Ctrl-C stops the demo; the folders stay.
            """
    )

    @Option(help: "How many nodes (2 to 16).")
    var nodes: Int = 4

    @Option(help: ArgumentHelp("Where to put the node folders (default: a new temp directory).", valueName: "path"))
    var dir: String?

    @Option(help: ArgumentHelp("Stop after converging (seconds to keep syncing, 0: stop at once; default: until Ctrl-C).", valueName: "seconds"))
    var exitAfter: Int?

    @OptionGroup var node: NodeOptions

    func validate() throws {
        guard (2...16).contains(nodes) else { throw ValidationError("--nodes must be between 2 and 16.") }
        try node.validateCommon()
    }

    func run() async throws {
        var level = node.logLevel
        if level == .info { level = .warning }  // keep the demo's screen for progress
        let logger = try LogSetup.bootstrap(target: node.log == .auto ? .stderr : node.log, level: level)
        let base = dir.map { ($0 as NSString).expandingTildeInPath } ?? FileManager.default.temporaryDirectory.appendingPathComponent("synckit-demo-\(ProcessInfo.processInfo.processIdentifier)").path
        let folders = (0..<nodes).map { base + "/node\($0 + 1)" }
        for (i, f) in folders.enumerated() {
            try FileManager.default.createDirectory(atPath: f, withIntermediateDirectories: true)
            if (try FileManager.default.contentsOfDirectory(atPath: f)).filter({ $0 != ".synckit" }).isEmpty { seed(f, node: i + 1) }
        }
        let ports = try TCPTransport.freeLoopbackPorts(nodes)
        print("SyncKit demo: \(nodes) nodes on 127.0.0.1, ports \(ports.map(String.init).joined(separator: ", "))")
        print("Folders under \(base)")

        // The demo's nodes share a fresh random key unless one is configured (never open mode),
        // and talk TLS like any other nodes.
        let demoKey = try node.configuredKey() ?? ClusterKey(secret: ClusterKey.nonce().map { String($0, radix: 16) }.joined())
        var services = [ServiceGroupConfiguration.ServiceConfiguration]()
        var syncNodes = [SyncNode]()
        for i in 0..<nodes {
            var config = SyncConfiguration(folder: folders[i])
            config.name = "node\(i + 1)"
            config.port = ports[i]
            config.clusterName = node.cluster
            config.clusterKey = demoKey
            config.pullOrder = node.pullOrder
            let peers = ports.enumerated().filter { $0.offset != i }.map { PeerEndpoint(host: "127.0.0.1", port: $0.element) }
            var nodeLogger = logger
            nodeLogger[metadataKey: "node"] = "node\(i + 1)"
            let identity = try NodeIdentity.loadOrCreate(in: config.resolvedStateDirectory)
            let n = try SyncNode(
                configuration: config, discovery: StaticDiscovery(peers: peers, logger: nodeLogger),
                transport: node.transport(bindHost: "127.0.0.1", identity: identity, logger: nodeLogger), policy: node.policyValue(), logger: nodeLogger)
            syncNodes.append(n)
            services.append(.init(service: n))
        }
        let exitAfter = self.exitAfter
        services.append(.init(service: ProgressReporter(nodes: syncNodes, folders: folders, exitAfter: exitAfter), successTerminationBehavior: .gracefullyShutdownGroup))
        let group = ServiceGroup(configuration: .init(services: services, logger: logger))
        SignalHandling.install(group: group)
        do { try await group.run() } catch let error as SyncError {
            FileHandle.standardError.write(Data("syncctl: \(error.message)\n".utf8))
            throw ExitCode(1)
        }
        print("Stopped. The folders are still under \(base).")
    }

    /// Gives node `n` its own files.
    func seed(_ folder: String, node n: Int) {
        func put(_ path: String, _ data: Data) {
            let full = folder + "/" + path
            try? FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            FileManager.default.createFile(atPath: full, contents: data)
        }
        put("node\(n)/hello.txt", Data("Hello from node \(n). This file started on node \(n) only.\n".utf8))
        put("node\(n)/docs/deep/notes-\(n).md", Data("# Notes of node \(n)\n\n- nested folders sync too\n".utf8))
        var rng = SystemRandomNumberGenerator()
        put("node\(n)/photos/image-\(n).bin", Data((0..<(200_000 + n * 37_000)).map { _ in UInt8.random(in: 0...255, using: &rng) }))
        if n <= 2 {
            // The same name with different contents on two nodes: the conflict policy decides.
            put("shared/readme.txt", Data("This readme was written on node \(n).\n".utf8))
        }
    }
}

/// Prints progress until all demo nodes agree, then what each folder holds.
struct ProgressReporter: Service {
    let nodes: [SyncNode]
    let folders: [String]
    let exitAfter: Int?

    func run() async throws {
        let start = ContinuousClock.now
        var converged = false
        var lastLine = ""
        while !Task.isCancelledOrShuttingDown {
            try? await Task.sleep(for: .milliseconds(250))
            var parts = [String]()
            var allInSync = true
            for (i, n) in nodes.enumerated() {
                let s = await n.status()
                allInSync = allInSync && s.inSync && s.peers.count == nodes.count - 1
                parts.append("node\(i + 1): \(s.files) files, \(s.peers.count) peers\(s.inSync ? "" : ", syncing")")
            }
            let line = parts.joined(separator: " | ")
            if line != lastLine {
                print("[\(String(format: "%5.1f", Double((ContinuousClock.now - start).components.attoseconds) / 1e18 + Double((ContinuousClock.now - start).components.seconds)))s] \(line)")
                lastLine = line
            }
            if allInSync && !converged {
                converged = true
                print("\nAll \(nodes.count) nodes hold the same files:")
                for (i, f) in folders.enumerated() {
                    let listing = (FileManager.default.enumerator(atPath: f)?.allObjects as? [String] ?? [])
                        .filter { !$0.hasPrefix(".synckit") }.sorted()
                    print("  node\(i + 1)  \(f)")
                    if i == 0 { for p in listing { print("      \(p)") } }
                }
                if let exitAfter {
                    try? await Task.sleep(for: .seconds(exitAfter))
                    return
                }
                print("\nStill syncing: add, edit, rename or delete files in any folder above and watch the others follow. Ctrl-C to stop.")
            }
        }
    }
}

extension Task where Success == Never, Failure == Never {
    static var isCancelledOrShuttingDown: Bool { Task.isCancelled || Task.isShuttingDownGracefully }
}
