import Foundation

/// Everything a `SyncNode` needs besides its plugins. Defaults are what `syncctl` uses.
public struct SyncConfiguration: Sendable {
    /// The folder to keep in sync (absolute path).
    public var folder: String
    /// Where the identity, index and temp state live; default `<folder>/.synckit`.
    public var stateDirectory: String?
    /// A human name for logs and discovery; default: the short node ID.
    public var name: String?
    /// Nodes sync only with peers that name the same cluster...
    public var clusterName: String = "default"
    /// ...and prove they hold the same key (open mode when none)...
    public var clusterKey: ClusterKey = .open
    /// ...or are trusted by ID (over TLS, where the ID is the certificate's hash).
    public var trust = TrustList()
    /// Port to accept peers on (0: pick a free one).
    public var port: Int = 0
    public var pullOrder: PullOrder = .smallestFirst
    /// How long the watcher waits for a burst of changes to settle before scanning.
    public var debounce: Duration = .milliseconds(20)
    /// Full rescan period: the safety net for anything the watcher misses.
    public var rescanInterval: Duration = .seconds(60)
    /// How often failed pulls are retried.
    public var retryInterval: Duration = .seconds(2)
    /// Idle links send a ping this often...
    public var pingInterval: Duration = .seconds(15)
    /// ...and a link that received nothing for this long is closed as dead.
    public var deadPeerTimeout: Duration = .seconds(45)
    /// Longest wait between two dial attempts to an unreachable peer.
    public var maxRedialDelay: Duration = .seconds(10)
    public var handshakeTimeout: Duration = .seconds(10)
    /// Files pulled at once.
    public var maxConcurrentJobs: Int = 32
    /// Blocks in flight within one file.
    public var blockWindow: Int = 16
    /// Bytes of block requests in flight per peer.
    public var requestBudgetPerPeer: Int = 8 << 20
    /// How long a block request may wait for its answer before the job asks another peer.
    public var requestTimeout: Duration = .seconds(30)
    /// Watch the folder with inotify (off: periodic rescans only).
    public var watch: Bool = true
    /// Codecs for links in another protocol than SyncKit's (Syncthing's BEP), chosen by the
    /// transport's ALPN. Set, the node also keeps Syncthing's fixed-size block list of every
    /// file it hashes (`FileRecord.fixedBlocks`), which such peers ask for blocks by.
    public var linkCodecs: LinkCodecs?
    /// Records of a table (this node's index, a peer's, the block map, the pull queue) kept in
    /// memory before the table moves to the state directory's spill file (`SpillStore`): a
    /// folder of a million files then fits in about 200 MiB instead of 1.6 GiB.
    public var memoryRecordLimit: Int = 50_000
    /// What is kept of the files syncs replace or delete (`VersionStore`); off by default.
    public var versioning: VersioningPolicy = .off

    public init(folder: String) { self.folder = folder }

    /// The state directory: the one configured, or `.synckit` in the folder.
    public var resolvedStateDirectory: String { stateDirectory ?? folder + "/" + PathSafety.stateDirectory }

    /// The state directory's path relative to the folder when it is inside it (and is not the
    /// default `.synckit`, which is always reserved): never synced, never written by a pull.
    var reservedPaths: [String] {
        let folder = (self.folder as NSString).standardizingPath
        let state = (resolvedStateDirectory as NSString).standardizingPath
        guard state.hasPrefix(folder + "/") else { return [] }
        let relative = String(state.dropFirst(folder.count + 1))
        return relative == PathSafety.stateDirectory ? [] : [relative]
    }
}
