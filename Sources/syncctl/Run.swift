import ArgumentParser
import DiscoveryMDNSLite
import DiscoveryStatic
import Foundation
import Logging
import ServiceLifecycle
import ProtocolBEP
import SyncKit
import TransportTCP

/// How nodes find each other (`--discovery`).
enum DiscoveryKind: String, ExpressibleByArgument, CaseIterable {
    case `static`, multicast
}

/// Which conflict policy decides concurrent edits (`--policy`).
enum PolicyKind: String, ExpressibleByArgument, CaseIterable {
    case newest
    case keepBoth = "keep-both"
}

/// Where logs go (`--log`).
enum LogTarget: String, ExpressibleByArgument, CaseIterable {
    case auto, journald, stderr
}

extension PullOrder: ExpressibleByArgument {}
extension Logger.Level: @retroactive ExpressibleByArgument {}

/// Options that shape a node, shared by `run` and `demo`.
struct NodeOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Conflict policy for files edited on two nodes at once: 'newest' (later modification time wins; the other version is kept as name.sync-conflict-DATE-NODE.ext) or 'keep-both' (both always kept).", valueName: "policy"))
    var policy: PolicyKind = .newest

    @Flag(help: "With --policy newest: drop the losing version instead of keeping a conflict copy.")
    var noConflictCopies = false

    @Option(help: ArgumentHelp("Order in which missing files are pulled: \(PullOrder.allCases.map(\.rawValue).joined(separator: ", ")).", valueName: "order"))
    var pullOrder: PullOrder = .smallestFirst

    @Option(help: ArgumentHelp("Cluster name: nodes sync only with nodes of the same cluster.", valueName: "name"))
    var cluster: String = "default"

    @Option(help: ArgumentHelp("File holding the cluster's shared secret (or set SYNCKIT_CLUSTER_KEY). `run` refuses to start without one unless --open is given.", valueName: "path"))
    var clusterKeyFile: String?

    @Flag(help: "Open mode: accept any SyncKit node on the network that names the same cluster, with no cluster key and no trust list; it may then change files here. For tests and throwaway demos only; `run` refuses to start without a key or a trust list otherwise.")
    var open = false

    @Option(name: .customLong("trust"), help: ArgumentHelp("A node ID allowed to connect (repeatable), as `syncctl id` or Syncthing prints it (XXXXXXX-XXXXXXX-...). A trusted node needs no cluster key.", valueName: "id"))
    var trust: [String] = []

    @Option(help: ArgumentHelp("A file of trusted node IDs, one per line ('#' starts a comment); read again when it changes, so removing an ID shuts that node out at its next connection.", valueName: "path"))
    var trustFile: String?

    @Flag(help: "Plain TCP instead of TLS: every file crosses the network in clear and no node's identity is proven. For benchmarks and debugging only; needs a cluster key or --open (a trust list needs TLS).")
    var insecurePlaintext = false

    @Option(help: ArgumentHelp("The folder's ID for Syncthing peers (BEP): a Syncthing device syncs this folder with the node when it shares a folder of this ID with it. Syncthing's default folder is 'default'.", valueName: "id"))
    var folderID: String = "default"

    @Flag(help: "Do not speak Syncthing's protocol (BEP): accept and offer SyncKit's only, and do not keep each file's Syncthing block list.")
    var noBep = false

    /// Speaks BEP beside our protocol: over TLS, unless switched off.
    var speaksBEP: Bool { !noBep && !insecurePlaintext }

    @Option(help: ArgumentHelp("Where logs go: 'auto' (journald when its socket exists, else stderr), 'journald' or 'stderr'.", valueName: "target"))
    var log: LogTarget = .auto

    @Option(help: ArgumentHelp("Least severe log level shown: trace, debug, info, notice, warning, error, critical.", valueName: "level"))
    var logLevel: Logger.Level = .info

    func policyValue() -> any ConflictPolicy {
        switch policy {
        case .newest: NewestWinsPolicy(keepLoserCopies: !noConflictCopies)
        case .keepBoth: KeepBothPolicy()
        }
    }

    /// The key `run` uses: the configured one, or none when the trust list (over TLS) or `--open`
    /// says who may connect. Never open mode without `--open`.
    func clusterKey() throws -> ClusterKey {
        let hasTrust = !trust.isEmpty || trustFile != nil
        if insecurePlaintext && hasTrust {
            throw ValidationError("--trust and --trust-file need TLS: a node ID is proven by its certificate. Drop --insecure-plaintext, or use a cluster key.")
        }
        if let key = try configuredKey() {
            if open { throw ValidationError("--open runs without a cluster key, but a key is set (SYNCKIT_CLUSTER_KEY or --cluster-key-file); give one or the other.") }
            return key
        }
        guard open || hasTrust else {
            throw ValidationError("No cluster key and no trust list: set SYNCKIT_CLUSTER_KEY or --cluster-key-file to a long random secret shared by every node (for example `head -c 32 /dev/urandom | base64 > cluster.key`), or --trust the IDs of the other nodes (`syncctl id --dir ...` prints them), or pass --open to let any SyncKit node on the network join.")
        }
        return .open
    }

    /// Who may connect without the cluster key.
    func trustList() throws -> TrustList {
        var ids = Set<NodeID>()
        for text in trust {
            guard let id = NodeID(text) else {
                throw ValidationError("'\(text)' is not a node ID: it has eight groups of seven letters and digits (XXXXXXX-XXXXXXX-...), as `syncctl id` prints it; check for a typo.")
            }
            ids.insert(id)
        }
        if let trustFile {
            do { _ = try TrustList.read(trustFile) } catch let error as SyncError { throw ValidationError(error.message) }
        }
        return TrustList(ids: ids, file: trustFile, acceptsAnyone: open)
    }

    /// The key given by `--cluster-key-file` or `SYNCKIT_CLUSTER_KEY`, nil when there is none.
    func configuredKey() throws -> ClusterKey? {
        if let clusterKeyFile {
            guard let text = try? String(contentsOfFile: clusterKeyFile, encoding: .utf8), !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                throw ValidationError("Cannot read a cluster key from \(clusterKeyFile): the file is missing, unreadable or empty.")
            }
            return ClusterKey(secret: text)
        }
        if let env = ProcessInfo.processInfo.environment["SYNCKIT_CLUSTER_KEY"], !env.isEmpty {
            return ClusterKey(secret: env)
        }
        return nil
    }

    func validateCommon() throws {
        if noConflictCopies && policy != .newest {
            throw ValidationError("--no-conflict-copies only applies to --policy newest.")
        }
        _ = try configuredKey()
        _ = try trustList()
    }

    /// The transport: TLS with this node's identity, or plain TCP when asked.
    func transport(bindHost: String, identity: NodeIdentity, logger: Logger) -> TCPTransport {
        if insecurePlaintext {
            logger.warning("INSECURE: --insecure-plaintext: files cross the network in clear, and no peer's identity is proven. For benchmarks and debugging only.")
        }
        // Both protocols on one port, ours first: the listener's order decides, so two SyncKit
        // nodes speak their own; a Syncthing peer offers only BEP and gets it.
        let protocols = speaksBEP ? [TLSSettings.syncKitProtocol, BEPFrames.applicationProtocol] : [TLSSettings.syncKitProtocol]
        return TCPTransport(configuration: .init(bindHost: bindHost, tls: insecurePlaintext ? nil : TLSSettings(identity: identity, applicationProtocols: protocols)), logger: logger)
    }
}

/// `syncctl run`: syncs one folder until stopped.
struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sync a folder with the other nodes of the cluster until stopped.",
        discussion: """
            Examples:
              syncctl run --dir /srv/share --discovery static --peer 10.0.0.2:22000 --peer 10.0.0.3:22000
              syncctl run --dir ~/Shared --discovery multicast --policy keep-both
              SYNCKIT_CLUSTER_KEY=s3cret syncctl run --dir /data --peers-file /etc/synckit/peers
              syncctl run --dir ~/Shared --peer nas.local:22000 --trust <Syncthing device ID> --folder-id default

            Syncthing devices join by the same port: the node speaks Syncthing's protocol \
            (BEP) to a device that asks for it, syncing this folder as the Syncthing folder \
            --folder-id with the devices it trusts (README, "Joining a Syncthing cluster").

            Links are TLS 1.3; each node's ID is its certificate's hash (`syncctl id`). A peer \
            may connect when its ID is trusted (--trust, --trust-file) or it proves the \
            cluster key (same --cluster name and key on every node); without either `run` \
            refuses to start unless --open is given. Stop with Ctrl-C or \
            SIGTERM: transfers in flight are parked and resumed at the next start; a second \
            signal exits at once.
            """
    )

    @OptionGroup var folder: FolderOptions
    @OptionGroup var node: NodeOptions
    @OptionGroup var versioning: VersioningOptions
    @OptionGroup var gui: GUIOptions

    @Option(help: ArgumentHelp("A YAML or JSON file with the same keys as these flags (e.g. `port: 22000`, `peer: [a:22000, b:22000]`); flags typed here win.", valueName: "path"))
    var config: String?

    @Option(help: ArgumentHelp("TCP port to accept peers on (0 picks a free one).", valueName: "port"))
    var port: Int = 22000

    @Option(help: ArgumentHelp("Address to listen on.", valueName: "address"))
    var bind: String = "0.0.0.0"

    @Option(help: ArgumentHelp("A name for this node in logs and on peers (default: the short node ID).", valueName: "name"))
    var name: String?

    @Option(help: ArgumentHelp("How to find peers: 'static' (the --peer list) or 'multicast' (mDNS on the LAN).", valueName: "kind"))
    var discovery: DiscoveryKind = .static

    @Option(name: .customLong("peer"), help: ArgumentHelp("A peer to connect to, as host:port (repeatable). Host names are resolved again and again, so Compose service names work.", valueName: "host:port"))
    var peers: [String] = []

    @Option(help: ArgumentHelp("A file listing peers, one host:port per line ('#' starts a comment).", valueName: "path"))
    var peersFile: String?

    @Option(name: .customLong("interface"), help: ArgumentHelp("With --discovery multicast: a network interface to announce and browse on (repeatable; default: every multicast-capable one).", valueName: "name"))
    var interfaces: [String] = []

    @Option(help: ArgumentHelp("Seconds the mDNS host records (SRV, A) live (tests shorten it).", valueName: "seconds", visibility: .hidden))
    var mdnsHostTTL: Int?

    @Option(help: ArgumentHelp("Seconds between full rescans (the safety net behind the file watcher).", valueName: "seconds"))
    var rescanInterval: Int = 60

    @Flag(help: "Do not watch the folder with inotify; find changes by periodic rescans only.")
    var noWatch = false

    @Option(help: ArgumentHelp("Records of a table (the index, each peer's index, the block map, the pull queue) kept in memory before it moves to the state directory's spill file; lower uses less memory on large folders, higher is a little faster.", valueName: "count"))
    var memoryRecords: Int = 50_000

    @Option(help: ArgumentHelp("Serve Prometheus metrics at http://ADDRESS/metrics, e.g. 127.0.0.1:9464 (off by default).", valueName: "host:port"))
    var metricsAddress: String?

    func validate() throws {
        try folder.validateFolder()
        try node.validateCommon()
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535, not \(port).") }
        for p in peers where PeerEndpoint(parsing: p) == nil {
            throw ValidationError("'\(p)' is not a peer address: write host:port, for example 192.168.1.20:22000 or [fe80::1]:22000.")
        }
        if let peersFile { _ = try readPeers(peersFile) }
        if discovery == .static && peers.isEmpty && peersFile == nil {
            throw ValidationError("--discovery static needs at least one --peer host:port or a --peers-file (or use --discovery multicast).")
        }
        guard rescanInterval > 0 else { throw ValidationError("--rescan-interval must be positive.") }
        guard memoryRecords >= 0 else { throw ValidationError("--memory-records cannot be negative.") }
        if discovery == .multicast {
            do {
                let names = try MulticastDiscovery(configuration: .init(interfaces: interfaces), logger: Logger(label: "validate")).selectedInterfaces()
                if names.isEmpty { throw ValidationError("--discovery multicast: no multicast-capable network interface here; name one with --interface or use --discovery static.") }
            } catch let error as SyncError {
                throw ValidationError("--interface: \(error.message).")
            }
        } else if !interfaces.isEmpty {
            throw ValidationError("--interface only applies to --discovery multicast.")
        }
        try gui.validateGUI()
        if let metricsAddress, PeerEndpoint(parsing: metricsAddress) == nil {
            throw ValidationError("--metrics-address takes host:port, for example 127.0.0.1:9464, not '\(metricsAddress)'.")
        }
        // Last, so that other mistakes are reported first: no silent open mode.
        _ = try node.clusterKey()
    }

    func readPeers(_ path: String) throws -> [PeerEndpoint] {
        do { return try StaticDiscovery.readPeersFile(atPath: path) } catch let error as SyncError {
            throw ValidationError(error.message)
        }
    }

    func run() async throws {
        let logger = try LogSetup.bootstrap(target: node.log, level: node.logLevel)
        let registry = metricsAddress == nil ? nil : MetricsServer.bootstrap()
        var config = SyncConfiguration(folder: folder.absoluteDir)
        config.stateDirectory = folder.stateDir
        config.name = name
        config.clusterName = node.cluster
        config.clusterKey = try node.clusterKey()
        config.trust = try node.trustList()
        config.port = port
        config.pullOrder = node.pullOrder
        config.watch = !noWatch
        config.rescanInterval = .seconds(rescanInterval)
        config.memoryRecordLimit = memoryRecords
        config.versioning = try versioning.policy()

        let identity: NodeIdentity
        do { identity = try NodeIdentity.loadOrCreate(in: config.resolvedStateDirectory) } catch let error as SyncError {
            FileHandle.standardError.write(Data("syncctl: \(error.message)\n".utf8))
            throw ExitCode(1)
        }
        let transport = node.transport(bindHost: bind, identity: identity, logger: logger)
        if node.speaksBEP {
            config.linkCodecs = BEPLinkCodec.factory(me: identity.id, folderID: node.folderID, folderLabel: URL(fileURLWithPath: folder.absoluteDir).lastPathComponent, clientVersion: SyncCtl.configuration.version)
        }
        let discoveryPlugin: any PeerDiscovery
        switch discovery {
        case .static:
            var endpoints = peers.compactMap { PeerEndpoint(parsing: $0) }
            if let peersFile { endpoints += try readPeers(peersFile) }
            discoveryPlugin = StaticDiscovery(peers: endpoints, logger: logger)
        case .multicast:
            var mdns = MulticastDiscovery.Configuration(interfaces: interfaces)
            if let mdnsHostTTL { mdns.hostTTL = UInt32(mdnsHostTTL) }
            discoveryPlugin = MulticastDiscovery(configuration: mdns, logger: logger)
        }
        do {
            let syncNode = try SyncNode(configuration: config, discovery: discoveryPlugin, transport: transport, policy: node.policyValue(), logger: logger)
            let control = ControlServer(path: (folder.stateDir ?? folder.absoluteDir + "/.synckit") + "/control.sock", node: syncNode, logger: logger)
            // The group stops services in reverse order: any drain first, then the control
            // socket, and the node last.
            var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: syncNode), .init(service: control)]
            if let ms = ProcessInfo.processInfo.environment["SYNCKIT_TEST_SHUTDOWN_DELAY_MS"].flatMap(Int.init) {
                services.append(.init(service: ShutdownDelayForTests(delay: .milliseconds(ms)), successTerminationBehavior: .ignore))
            }
            if let versions = syncNode.versions {
                services.append(.init(service: VersionCleanup(store: versions, logger: logger)))
            }
            if !gui.noGui, let endpoint = gui.endpoint {
                let stateDirectory = config.resolvedStateDirectory
                // A key given by flag or config is written where `gui-url` reads it.
                let key = try gui.guiApiKey ?? GUIKeys.loadOrCreate(stateDirectory)
                if gui.guiApiKey != nil, GUIKeys.read(stateDirectory) != key { try GUIKeys.store(key, stateDirectory) }
                let server = GUIServer(
                    host: endpoint.host, port: endpoint.port, tls: gui.guiTls ? TLSSettings(identity: identity) : nil,
                    api: RESTAPI(node: syncNode, logger: logger), apiKey: key,
                    stateDirectory: stateDirectory, logger: logger)
                // A GUI that could not bind, or failed, ends alone: the node goes on.
                services.append(.init(service: server, successTerminationBehavior: .ignore, failureTerminationBehavior: .ignore))
            }
            if let registry, let metricsAddress, let endpoint = PeerEndpoint(parsing: metricsAddress) {
                services.append(.init(service: MetricsServer(host: endpoint.host, port: endpoint.port, registry: registry, logger: logger)))
            }
            var groupConfig = ServiceGroupConfiguration(
                services: services,
                gracefulShutdownSignals: [], cancellationSignals: [], logger: logger)
            groupConfig.maximumGracefulShutdownDuration = .seconds(8)
            let group = ServiceGroup(configuration: groupConfig)
            SignalHandling.install(group: group)
            try await group.run()
        } catch let error as SyncError {
            FileHandle.standardError.write(Data("syncctl: \(error.message)\n".utf8))
            throw ExitCode(1)
        }
    }
}
