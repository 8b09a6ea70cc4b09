import NIOCore

/// One transport connection, for the lifetime of a node (the shell numbers them).
public struct ConnectionID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let raw: UInt64
    public init(_ raw: UInt64) { self.raw = raw }
    public static func < (a: ConnectionID, b: ConnectionID) -> Bool { a.raw < b.raw }
    public var description: String { "c\(raw)" }
}

/// One block a running job asked for (the shell numbers them).
public struct FetchID: Hashable, Sendable, CustomStringConvertible {
    public let raw: UInt64
    public init(_ raw: UInt64) { self.raw = raw }
    public var description: String { "f\(raw)" }
}

/// The node's timers. Each is either armed at one instant or not armed; arming it again moves it.
public enum TimerID: Hashable, Sendable {
    /// The watcher's burst settled: scan what it reported.
    case debounce
    /// Write the records changed since the last index write.
    case flushIndex
    /// Queue failed pulls again.
    case retryFailed
    /// Ping idle links, close silent ones.
    case ping
    /// The periodic full rescan.
    case rescan
    /// Fail block requests whose answer is overdue.
    case requestSweep
    /// Dial this endpoint again.
    case redial(PeerEndpoint)
    /// A connection that has not finished its handshake by now is closed.
    case handshake(ConnectionID)
}

/// What the scanner is asked to look at.
public enum ScanRequest: Sendable, Equatable {
    /// The whole folder.
    case full
    /// Only these paths (from the watcher), with their subtrees.
    case paths(Set<String>)
}

/// What a scan found, with the records it started from (`known`): an observation whose path
/// changed in the index while the scan ran (a job overtook it) is dropped.
public struct ScanResult: Sendable {
    public var request: ScanRequest
    public var observations: [SyncEngine.Observation]
    /// The local records the scan compared against (by path).
    public var known: LocalIndex
    /// Paths the folder keeps away from scans (a patch that could not be finished yet).
    public var unfinished: Set<String>
    /// A slice of a scan still running (`LocalFolder.scan(_:known:ignore:slices:)`): its
    /// observations are recorded now; the scan's end comes as a result without this flag.
    public var isSlice: Bool
    public init(request: ScanRequest, observations: [SyncEngine.Observation], known: LocalIndex, unfinished: Set<String> = [], isSlice: Bool = false) {
        self.request = request
        self.observations = observations
        self.known = known
        self.unfinished = unfinished
        self.isSlice = isSlice
    }
}

/// Bytes moved by one job.
public struct PullStats: Sendable, Equatable {
    public var bytesFromNetwork = 0
    public var bytesReused = 0
    public init(bytesFromNetwork: Int = 0, bytesReused: Int = 0) {
        self.bytesFromNetwork = bytesFromNetwork
        self.bytesReused = bytesReused
    }
}

/// Everything that happens to a node, as the shell reports it to `NodeMachine.handle`.
public enum NodeInput: Sendable {
    /// The node listens on `port` (0 when it does not listen): start with a full scan.
    case start(port: Int)
    /// A scan the machine asked for finished.
    case scanned(ScanResult)
    /// The watcher saw these paths change.
    case folderChanged(Set<String>)
    /// The watcher lost events: everything must be looked at again.
    case folderOverflow
    /// `.syncignore` was read again.
    case ignoreRulesLoaded(String)
    /// A timer fired.
    case timer(TimerID)
    /// Discovery found or lost an endpoint.
    case discovered(DiscoveryEvent)
    /// A dial the machine asked for failed.
    case dialFailed(PeerEndpoint, reason: String)
    /// A connection is up (accepted, or dialed to `dialed`); `nonce` is 32 fresh random bytes
    /// for its handshake; `security` is what its TLS handshake proved (nil over plain TCP), and
    /// `trusted` whether that peer was in the trust list when it connected.
    case connectionOpened(ConnectionID, address: String, dialed: PeerEndpoint?, nonce: [UInt8], security: PeerChannelSecurity? = nil, trusted: Bool = false)
    /// A message arrived on a connection (`wireSize`: its bytes on the wire).
    case received(ConnectionID, WireMessage, wireSize: Int)
    /// A connection ended (closed by either side, or broken).
    case connectionClosed(ConnectionID, reason: String)
    /// An index update the machine sent was handed to the connection: the next may follow.
    case indexBatchSent(ConnectionID)
    /// `count` blocks the machine asked to serve on the connection were sent (or could not
    /// be). The shell may report several in one input: under load, one actor turn for a burst
    /// of answers instead of one each.
    case served(ConnectionID, count: Int)
    /// A job needs a block of `target` (the record it is pulling) from a peer, excluding the
    /// peers that already failed to give it.
    case needBlock(FetchID, target: FileRecord, block: BlockRef, offset: UInt64, excluding: Set<NodeID>)
    /// A job no longer waits for a fetch (it was cancelled).
    case fetchCancelled(FetchID)
    /// A job ended.
    case jobFinished(PullJob, PullOutcome, PullStats)
    /// Rescan now (tests, `syncctl`).
    case rescanRequested
    /// Stop pulling (true) or pull again (false): the dashboard's and the API's pause.
    case pause(Bool)
    /// Stop: say goodbye to every peer, write the index.
    case stop
}

/// What the shell must do, in order, after `NodeMachine.handle`.
public enum Directive: Sendable {
    /// Send a message on a connection (after everything sent on it before).
    case send(ConnectionID, WireMessage)
    /// Close a connection.
    case close(ConnectionID, reason: String)
    /// Dial an endpoint; report `connectionOpened` or `dialFailed`.
    case dial(PeerEndpoint)
    /// Arm a timer at an instant of the node's clock (time since the node started).
    case setTimer(TimerID, at: Duration)
    /// Disarm a timer.
    case cancelTimer(TimerID)
    /// Scan (off the machine); report `scanned`. `known` is what to compare against.
    case scan(ScanRequest, known: LocalIndex)
    /// Read `.syncignore` again; report `ignoreRulesLoaded`.
    case loadIgnoreRules
    /// Run a job; report `jobFinished`. `locals` lists where its blocks are on this disk.
    case startJob(PullJob, locals: [BlockHash: [BlockMap.Location]])
    /// Hand a fetched block (nil: none) to the job that asked for it.
    case deliver(FetchID, ByteBuffer?, from: NodeID?)
    /// Read a block here (nil location: not found) and answer the request; report `served`.
    case serve(ConnectionID, WireMessage.BlockRequest, BlockMap.Location?)
    /// Write these index changes (one transaction), now, before the next directive.
    case persist(IndexChanges)
    /// Write the sequence reservation, now, before the next directive (sends may follow).
    case reserveSequences(through: UInt64)
    /// Forget the pull intents of the last run.
    case clearIntents
    /// Delete the temp file of an abandoned pull.
    case removeTemp(path: String)
    /// Delete every stale temp file in the folder.
    case cleanStaleTemps
    /// Start watching the folder (before the first scan, so nothing made during it is missed).
    case watch
    /// The first scan is done: accept peers and start discovery.
    case ready
    /// Report an event to subscribers.
    case emit(SyncEvent)
}

extension NodeInput {
    /// True for the inputs that move one block and touch nothing else the machine schedules
    /// from: a fetch asked for or cancelled, a serve done, a block request, response or ping
    /// received. (A failed fetch ends its job, and the job's end schedules.)
    var isBlockTraffic: Bool {
        switch self {
        case .needBlock, .fetchCancelled, .served: return true
        case .received(_, let message, _):
            switch message {
            case .blockRequest, .blockResponse, .ping: return true
            default: return false
            }
        default: return false
        }
    }
}
