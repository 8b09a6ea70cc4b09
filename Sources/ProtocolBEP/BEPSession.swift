import SyncKit

/// One BEP connection to a Syncthing peer, as a pure state machine, beside our own protocol's
/// `PeerSession`: it does no I/O and reads no clock. The node feeds it what arrived and the
/// time, and carries out what it returns.
///
/// The order BEP requires (Syncthing's lib/protocol `dispatcherLoop`): both sides send a Hello at
/// once (Syncthing handles new connections one at a time with a 20 s Hello deadline, so a late
/// Hello stalls all of its new links); then a ClusterConfig; nothing but a Close (or a Ping) may
/// come before the peer's ClusterConfig. Index entries and requests are checked here before the
/// node sees them (`SyncthingFiles`: names, types and block lists; a request's name by the same
/// path rules), and anything wrong ends the connection, as it ends it in Syncthing. Liveness is
/// Syncthing's too: a Ping when nothing was sent for 90 s, and the connection closed when
/// nothing arrived for 300 s.
public struct BEPSession: Sendable {
    /// Who we are, for the Hello and the ClusterConfig.
    public struct Configuration: Sendable {
        public var me: NodeID
        public var deviceName: String
        public var clientVersion: String
        public var folderID: String

        public init(me: NodeID, deviceName: String, clientVersion: String, folderID: String) {
            self.me = me
            self.deviceName = deviceName
            self.clientVersion = clientVersion
            self.folderID = folderID
        }
    }

    public enum Phase: Sendable, Equatable {
        /// Our Hello is sent; theirs has not arrived.
        case awaitingHello
        /// Their Hello arrived; their ClusterConfig has not.
        case awaitingClusterConfig
        /// Their ClusterConfig arrived: index and block traffic may flow.
        case ready
        /// The connection is over (a Close either way, a refusal, a timeout).
        case closed
    }

    /// What the node must do.
    public enum Output: Sendable, Equatable {
        /// Write this frame (`BEPFrames`).
        case send(BEPMessage)
        case sendHello(Bep_Hello)
        /// The peer's Hello: who it says it is (its device ID is the certificate's, not this).
        /// The node sends our ClusterConfig now (`BEPClusterConfig.make`), without waiting for
        /// the peer's: Syncthing sends its own as soon as the Hellos are exchanged, and two
        /// sides that each waited for the other's would wait forever.
        case peerHello(deviceName: String, client: String)
        /// The peer's ClusterConfig arrived: start the index exchange of our folder as `start`
        /// says; nil when the peer does not share our folder (nothing flows until a later
        /// ClusterConfig shares it).
        case clusterConfig(BEPClusterConfig.Start?)
        /// Records from the peer's index (`full`: an Index, which replaces what we held of it; an
        /// IndexUpdate adds to it). Invalid entries are left out; `lastSequence` is the highest
        /// sequence the message carried.
        case index(records: [FileRecord], full: Bool, lastSequence: Int64)
        /// The peer asks for a block of our folder.
        case request(Bep_Request)
        /// The peer answers one of our requests.
        case response(Bep_Response)
        /// End the connection (after writing what came before it in the same answer: when we
        /// end it, a Close that tells the peer why).
        case close(reason: String)
    }

    public let configuration: Configuration
    /// The peer, as its certificate proved it.
    public let peer: NodeID
    public private(set) var phase = Phase.awaitingHello
    public private(set) var lastReceived: Duration
    public private(set) var lastSent: Duration

    /// Syncthing's intervals (lib/protocol): a Ping when nothing was sent for this long...
    public static let pingInterval: Duration = .seconds(90)
    /// ...and the connection is dead when nothing arrived for this long.
    public static let receiveTimeout: Duration = .seconds(300)

    public init(configuration: Configuration, peer: NodeID, now: Duration) {
        self.configuration = configuration
        self.peer = peer
        lastReceived = now
        lastSent = now
    }

    /// What to say first, at once on connecting: our Hello.
    public mutating func start(now: Duration) -> [Output] {
        var hello = Bep_Hello()
        hello.deviceName = configuration.deviceName
        hello.clientName = "syncctl"
        hello.clientVersion = configuration.clientVersion
        lastSent = now
        return [.sendHello(hello)]
    }

    /// Takes one item the peer sent. `folderState` is asked, when the peer's ClusterConfig
    /// arrives, for our index as it is then (its ID and sequence, and the index ID we hold of
    /// the peer's entries).
    public mutating func receive(
        _ item: BEPStreamDecoder.Item, now: Duration,
        folderState: () -> (ourIndexID: UInt64, ourSequence: Int64, heldPeerIndexID: UInt64)
    ) -> [Output] {
        guard phase != .closed else { return [] }
        lastReceived = now
        switch (phase, item) {
        case (.awaitingHello, .hello(let hello)):
            phase = .awaitingClusterConfig
            return [.peerHello(deviceName: hello.deviceName, client: "\(hello.clientName) \(hello.clientVersion)")]
        case (_, .hello):
            return refuse("a second Hello")
        case (.awaitingHello, .message):
            return refuse("a message before the Hello")
        case (_, .message(.close(let close))):
            phase = .closed
            return [.close(reason: "closed by the peer: \(close.reason)")]
        case (_, .message(.ping)):
            return []
        case (_, .message(.clusterConfig(let config))):
            let state = folderState()
            do {
                let start = try BEPClusterConfig.start(
                    from: config, folderID: configuration.folderID, me: configuration.me, peer: peer,
                    ourIndexID: state.ourIndexID, ourSequence: state.ourSequence, heldPeerIndexID: state.heldPeerIndexID)
                phase = .ready
                return [.clusterConfig(start)]
            } catch {
                return refuse(error.description)
            }
        case (.awaitingClusterConfig, .message(let m)):
            return refuse("\(m.type) before the ClusterConfig")
        case (.ready, .message(let m)):
            return ready(m)
        case (.closed, _):
            return []
        }
    }

    /// A message once the session is ready.
    private mutating func ready(_ message: BEPMessage) -> [Output] {
        switch message {
        case .index(let index):
            guard index.folder == configuration.folderID else { return [] }
            return entries(index.files, full: true)
        case .indexUpdate(let update):
            guard update.folder == configuration.folderID else { return [] }
            return entries(update.files, full: false)
        case .request(let request):
            // The name is checked by the same rules as an index entry's before the node looks
            // for it on disk; a request outside our folder is answered by the node (an error code).
            if let problem = PathSafety.problem(with: request.name) {
                return refuse("a request for \(request.name.debugDescription): \(problem)")
            }
            guard request.size >= 0, request.offset >= 0, request.size <= Int32(SyncthingBlocks.maxBlockSize) else {
                return refuse("a request for \(request.size) bytes at \(request.offset)")
            }
            return [.request(request)]
        case .response(let response):
            return [.response(response)]
        case .downloadProgress, .ping, .clusterConfig, .close:
            return []
        }
    }

    private mutating func entries(_ files: [Bep_FileInfo], full: Bool) -> [Output] {
        var records: [FileRecord] = []
        records.reserveCapacity(files.count)
        var last: Int64 = 0
        for file in files {
            do {
                if let record = try SyncthingFiles.record(from: file) { records.append(record) }
            } catch {
                return refuse(error.description)
            }
            last = max(last, file.sequence)
        }
        return [.index(records: records, full: full, lastSequence: last)]
    }

    /// Notes that the node wrote something (any message counts against the ping interval).
    public mutating func noteSent(now: Duration) {
        lastSent = now
    }

    /// The clock moved: a Ping if nothing was sent for `pingInterval`, a close if nothing came
    /// for `receiveTimeout`. Returns when to call again at the latest beside what to do.
    public mutating func tick(now: Duration) -> (outputs: [Output], next: Duration) {
        guard phase != .closed else { return ([], now + Self.pingInterval) }
        if now - lastReceived >= Self.receiveTimeout {
            return (refuse("nothing received for \(Self.receiveTimeout)"), now + Self.pingInterval)
        }
        var out: [Output] = []
        if phase != .awaitingHello, now - lastSent >= Self.pingInterval {
            lastSent = now
            out.append(.send(.ping))
        }
        return (out, min(lastSent + Self.pingInterval, lastReceived + Self.receiveTimeout))
    }

    /// Ends the session from our side (the node is stopping, the peer is no longer trusted).
    public mutating func close(reason: String) -> [Output] {
        guard phase != .closed else { return [] }
        return refuse(reason)
    }

    private mutating func refuse(_ reason: String) -> [Output] {
        phase = .closed
        var close = Bep_Close()
        close.reason = reason
        return [.send(.close(close)), .close(reason: reason)]
    }
}
