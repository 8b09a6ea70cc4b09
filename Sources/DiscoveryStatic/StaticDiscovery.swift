import Foundation
import Logging
import SyncKit

/// Discovery from a fixed list of peers (`host:port`), for networks without multicast: Docker
/// Compose, cloud VMs, routed subnets.
///
/// Each listed name is resolved with the system resolver (IPv4 preferred) and re-resolved every
/// `reresolveInterval`, so a peer whose address changes (a recreated container) is followed:
/// - every resolved address is reported as `.found(PeerEndpoint(host: <IP>, port:))`, and
///   reported again after each re-resolution (the node de-duplicates; to it a repeated `found`
///   means "try again if not connected");
/// - an address that no longer appears in a name's resolution is reported `.lost`;
/// - a name that does not resolve (yet: a Compose service not up) is retried every
///   `retryInterval` and logged at debug level; what it resolved to before stays as it was.
///
/// Endpoints carry no node ID: the handshake tells who answered. An address of this host with
/// this node's own port is this node itself and is not reported, so one peers file can list
/// every node of a cluster, itself included.
///
/// Each `events(announcing:)` stream owns one task that does the work; terminating the stream
/// cancels it.
public struct StaticDiscovery: PeerDiscovery {
    /// Timing and limits.
    public struct Configuration: Sendable {
        /// How often every name is resolved again.
        public var reresolveInterval: Duration
        /// How soon a name that failed to resolve is tried again.
        public var retryInterval: Duration
        /// At most this many addresses of one name are reported (a name that resolves to
        /// hundreds of addresses must not make the node dial hundreds of peers).
        public var maximumAddressesPerName: Int

        /// Creates a configuration: re-resolve every 30 s, retry failures every 3 s, up to 8
        /// addresses per name.
        public init(
            reresolveInterval: Duration = .seconds(30),
            retryInterval: Duration = .seconds(3),
            maximumAddressesPerName: Int = 8
        ) {
            self.reresolveInterval = reresolveInterval
            self.retryInterval = retryInterval
            self.maximumAddressesPerName = maximumAddressesPerName
        }
    }

    /// Turns a host name (or numeric address) into numeric addresses; throws when it cannot.
    public typealias Resolver = @Sendable (_ host: String) async throws -> [String]

    /// The peers as listed (names not resolved).
    public let peers: [PeerEndpoint]
    /// The timing in force.
    public let configuration: Configuration
    private let resolver: Resolver
    private let logger: Logger
    /// Shared by all copies of this value, so `runningStreams` sees every stream's task.
    private let running = Locked(0)

    /// Creates a discovery for `peers`.
    /// - Parameters:
    ///   - peers: where the other nodes listen; host names are resolved (and re-resolved).
    ///   - configuration: intervals and limits.
    ///   - logger: resolution failures are logged at debug level, changes at info.
    ///   - resolver: how names become addresses; the system resolver (getaddrinfo) by default.
    ///     Tests inject one to simulate changing DNS answers.
    public init(
        peers: [PeerEndpoint],
        configuration: Configuration = Configuration(),
        logger: Logger,
        resolver: @escaping Resolver = StaticDiscovery.systemResolver
    ) {
        self.peers = peers
        self.configuration = configuration
        self.logger = logger
        self.resolver = resolver
    }

    /// Creates a discovery for the peers listed in the file at `path` (see `parsePeers`).
    /// Throws `SyncError(.configuration)` when the file cannot be read or has a bad line.
    public init(
        peersFile path: String,
        configuration: Configuration = Configuration(),
        logger: Logger,
        resolver: @escaping Resolver = StaticDiscovery.systemResolver
    ) throws {
        self.init(
            peers: try Self.readPeersFile(atPath: path),
            configuration: configuration,
            logger: logger,
            resolver: resolver
        )
    }

    /// The system resolver: getaddrinfo on a background thread, IPv4 addresses when the name
    /// has any (else IPv6), sorted. Throws `SyncError(.transport)` when the name does not resolve.
    public static let systemResolver: Resolver = { host in try await SystemResolver.resolve(host) }

    /// How many event streams still have their task running. Drops to 0 once every stream
    /// was terminated and its task has ended; tests use it to check that nothing is left behind.
    public var runningStreams: Int {
        running.withLock { $0 }
    }

    // MARK: - Peers files

    /// Parses a peer list: one `host:port` (or `[IPv6]:port`) per line; `#` starts a comment;
    /// blank lines and surrounding whitespace are ignored; duplicates are dropped.
    /// - Parameter source: names the list in error messages (a file path, "--peer").
    /// - Throws: `SyncError(.configuration)` naming the first bad line and its number.
    public static func parsePeers(_ text: String, source: String = "peer list") throws -> [PeerEndpoint] {
        var peers: [PeerEndpoint] = []
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let uncommented = rawLine.prefix { $0 != "#" }
            let line = uncommented.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty { continue }
            guard let peer = PeerEndpoint(parsing: line) else {
                throw SyncError(
                    .configuration,
                    "\(source), line \(index + 1): \"\(line)\" is not a peer address; "
                        + "write host:port or [IPv6 address]:port, with a port from 1 to 65535"
                )
            }
            if !peers.contains(peer) { peers.append(peer) }
        }
        return peers
    }

    /// Reads and parses the peers file at `path` (see `parsePeers`).
    /// - Throws: `SyncError(.configuration)` when it cannot be read or has a bad line.
    public static func readPeersFile(atPath path: String) throws -> [PeerEndpoint] {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw SyncError(.configuration, "cannot read the peers file \(path)", underlying: error)
        }
        return try parsePeers(text, source: path)
    }

    // MARK: - Discovery

    /// Starts resolving the listed peers and returns what is found. `me.port` is used to skip
    /// this node's own entry.
    public func events(announcing me: LocalAnnouncement) -> AsyncStream<DiscoveryEvent> {
        // Bounded, newest kept: if the node stalls, older reports are superseded by the periodic
        // re-announcements anyway.
        let limit = max(64, peers.count * configuration.maximumAddressesPerName * 2)
        let (stream, continuation) = AsyncStream.makeStream(
            of: DiscoveryEvent.self,
            bufferingPolicy: .bufferingNewest(limit)
        )
        running.withLock { $0 += 1 }
        let task = Task { [peers, configuration, resolver, logger, running] in
            await withTaskGroup(of: Void.self) { group in
                for peer in peers {
                    group.addTask {
                        await Self.watch(
                            peer,
                            ownPort: me.port,
                            configuration: configuration,
                            resolver: resolver,
                            logger: logger,
                            continuation: continuation
                        )
                    }
                }
            }
            continuation.finish()
            running.withLock { $0 -= 1 }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    /// Resolves one listed peer until cancelled, reporting its addresses as they come and go.
    private static func watch(
        _ peer: PeerEndpoint,
        ownPort: Int,
        configuration: Configuration,
        resolver: Resolver,
        logger: Logger,
        continuation: AsyncStream<DiscoveryEvent>.Continuation
    ) async {
        var logger = logger
        logger[metadataKey: "peer.host"] = "\(peer.host)"
        logger[metadataKey: "peer.port"] = "\(peer.port)"
        var current: Set<String> = []
        while !Task.isCancelled {
            let pause: Duration
            do {
                var addresses = try await resolver(peer.host)
                if addresses.isEmpty { throw SyncError(.transport, "\(peer.host) resolved to no address") }
                if addresses.count > configuration.maximumAddressesPerName {
                    logger.debug("name resolves to more addresses than reported", metadata: ["peer.addresses": "\(addresses.count)"])
                    addresses = Array(addresses.prefix(configuration.maximumAddressesPerName))
                }
                // This node's own entry (same port on one of our addresses) is not a peer.
                let local = peer.port == ownPort ? SystemResolver.localAddresses() : []
                let reported = addresses.filter { !(peer.port == ownPort && SystemResolver.isLocal($0, in: local)) }
                let fresh = Set(reported)
                guard !Task.isCancelled else { return }
                for gone in current.subtracting(fresh).sorted() {
                    logger.info("peer address gone", metadata: ["peer.address": "\(gone)"])
                    continuation.yield(.lost(PeerEndpoint(host: gone, port: peer.port)))
                }
                if fresh != current, !fresh.isEmpty {
                    logger.debug("peer resolved", metadata: ["peer.addresses": "\(reported)"])
                }
                for address in reported {
                    continuation.yield(.found(PeerEndpoint(host: address, port: peer.port)))
                }
                current = fresh
                pause = configuration.reresolveInterval
            } catch is CancellationError {
                return
            } catch {
                logger.debug("peer name does not resolve yet; will retry", metadata: ["error": "\(error)"])
                pause = configuration.retryInterval
            }
            try? await Task.sleep(for: pause)
        }
    }
}
