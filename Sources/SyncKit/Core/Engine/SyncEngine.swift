import Foundation
import HeapModule

/// The sync logic as a pure state machine: events in, decisions out, no I/O.
///
/// The engine holds this node's index (what is on disk, plus tombstones), the index each peer
/// sent, and the queue of jobs that bring the disk to the agreed version. It never touches the
/// disk or the network: `SyncNode` performs what it returns (persist records, send them to
/// peers, run jobs) and reports back. This keeps every decision testable without files or
/// sockets, and whole clusters can be simulated from a seed (the shape of swift-cluster-
/// membership's `SWIM.Instance`).
///
/// Deciding a path (`target(for:)`): the local record and every peer's record for the path are
/// folded into one target. A version that descends from the other replaces it; concurrent
/// versions with the same content merge their vectors (never a conflict); an edit beats a
/// concurrent delete; other concurrent versions go to the `ConflictPolicy`, whose choice is a
/// deterministic function of the two records, so every node picks the same winner whatever
/// order the versions arrived in. Holders of the losing content adopt the winner's version
/// (keeping their content under a conflict name), after which all nodes hold one version.
public struct SyncEngine: Sendable {
    public let me: NodeID
    public var policy: any ConflictPolicy
    public var order: PullOrder
    /// Jobs that may run at once (blocks within a job are pipelined separately).
    public var maxConcurrentJobs: Int
    /// The floor for this node's version counters: wall-clock seconds by default (see
    /// `VersionVector.bumped(by:atLeast:)`); tests use a constant to keep counters small.
    public var versionClock: @Sendable () -> UInt64 = { UInt64(max(0, Date().timeIntervalSince1970)) }

    /// This node's index by path (in memory, or spilled to SQLite past a limit: `spill(to:above:)`).
    public private(set) var local = LocalIndex()
    /// The highest local sequence number handed out.
    public private(set) var sequence: UInt64 = 0
    /// What each peer told us, by peer and path.
    public private(set) var peers: [NodeID: PeerIndex] = [:]

    /// Pull targets that may be on disk without being recorded (a crash between the disk
    /// change and the index write), by path; only between a restart and its first full scan.
    public private(set) var intents: [String: FileRecord] = [:]

    /// Paths waiting for their turn, in pull order (the job itself is built at its turn).
    private var queue = PullQueue()
    /// Where the large tables go past `spillLimit` entries (`spill(to:above:)`).
    private var spillStore: SpillStore?
    private var spillLimit = Int.max
    /// Jobs handed to the node and not yet reported back.
    public private(set) var running: [String: PullJob] = [:]
    /// Paths whose last job failed, waiting for a retry (`retryFailed`).
    public private(set) var failed: [String: String] = [:]

    /// A peer's index as we know it.
    public struct PeerIndex: Sendable {
        public var records = PeerRecords()
        public var connected = false
        public var indexID: UInt64 = 0
        /// Highest sequence received from this index: the `since` of the next request.
        public var maxSequence: UInt64 = 0
        /// The peer finished sending what it had when it connected.
        public var caughtUp = false
    }

    /// What the node must do after an event.
    public struct Output: Sendable, Equatable {
        /// Local records changed: write them to the index store and send them to every
        /// connected peer (they got new sequence numbers).
        public var persist: [FileRecord] = []
        /// Local-only changes (a new inode after a rewrite with identical content): store them,
        /// send nothing.
        public var persistQuietly: [FileRecord] = []
        public var events: [SyncEvent] = []
        public init() {}
        public mutating func append(_ other: Output) {
            persist += other.persist
            persistQuietly += other.persistQuietly
            events += other.events
        }
    }

    public init(me: NodeID, policy: any ConflictPolicy, order: PullOrder = .smallestFirst, maxConcurrentJobs: Int = 16) {
        self.me = me
        self.policy = policy
        self.order = order
        self.maxConcurrentJobs = maxConcurrentJobs
    }

    /// Lets the index, each peer's index and the queue of pulls each move to `store` once it
    /// holds more than `limit` entries (see `SpillStore`): a folder of a million files then
    /// keeps SQLite's page cache in memory, not a million records three times over.
    public mutating func spill(to store: SpillStore, above limit: Int) {
        spillStore = store
        spillLimit = limit
        local.spill(to: store, above: limit)
        queue.spill(to: store, above: limit)
        for id in Array(peers.keys) { peers[id]!.records.spill(to: store, above: limit) }
    }

    /// True once this node's index lives in the spill store.
    public var isSpilled: Bool { local.isSpilled }

    /// An empty index for a peer, spilling as the engine's own tables do.
    private func newPeerIndex() -> PeerIndex {
        var p = PeerIndex()
        if let spillStore { p.records.spill(to: spillStore, above: spillLimit) }
        return p
    }

    /// Loads the index read from disk at start-up. `sequenceFloor` is the sequence reservation
    /// (`IndexStore.reservedSequence`): numbers up to it may have been handed out and sent to
    /// peers before a crash, so the next one is above it.
    public mutating func restore(records: [FileRecord], sequenceFloor: UInt64 = 0) {
        sequence = max(sequence, sequenceFloor)
        for r in records {
            local[r.path] = r
            sequence = max(sequence, r.sequence)
        }
    }

    /// Loads a peer's index as stored at the last run (not connected, not caught up): the
    /// next index request asks it only for what changed since `maxSequence`. Called again for
    /// the same peer, it adds the records (an index loaded in chunks).
    public mutating func restorePeer(_ peer: NodeID, indexID: UInt64, maxSequence: UInt64, records: [FileRecord]) {
        if peers[peer] == nil { peers[peer] = newPeerIndex() }
        peers[peer]!.indexID = indexID
        peers[peer]!.maxSequence = maxSequence
        for r in records { peers[peer]!.records.set(r, box: peers[peer]!.records.isSpilled ? nil : box(for: r, from: peer)) }
    }

    /// Loads the intents of pulls that may have changed the disk before the last run stopped
    /// (see `IndexStore`): the first scan adopts their versions where it finds their content.
    public mutating func restoreIntents(_ records: [FileRecord]) {
        for r in records { intents[r.path] = r }
    }

    /// Takes the intents whose change the folder knows reached the disk (`landed`: a file or
    /// link renamed into place, its temp file gone) as this node's records, as the pull would
    /// have recorded them had the node not stopped first. The first scan then compares the disk
    /// with what the node really had: the content is there (nothing to do), or a user changed
    /// or deleted it while the node was down, which is an edit made after that version and
    /// counts as one. (Without this, a file pulled just before a crash and deleted by its user
    /// before the restart left no trace, and came back from the peers.)
    public mutating func adoptLandedIntents(_ landed: Set<String>) -> Output {
        var out = Output()
        for path in landed.sorted() {
            guard let intent = intents[path], !intent.deleted, intent.kind == .file || intent.kind == .symlink else { continue }
            if let current = local[path] {
                let order = intent.version.compare(to: current.version)
                guard order == .newer || order == .concurrent else { continue }
            }
            var r = intent
            r.inode = 0  // unknown: the scan reads the file again
            commit(r, into: &out)
            reevaluate(path, into: &out)
        }
        return out
    }

    /// Forgets the intents once the first scan has looked at the whole folder.
    public mutating func dropIntents() {
        intents = [:]
    }

    /// Decides every known path again (after a restart restored peers' indexes: pulls that were
    /// pending when the node stopped are queued again).
    public mutating func reevaluateAll() -> Output {
        var out = Output()
        guard local.isSpilled || peers.values.contains(where: { $0.records.isSpilled }) else {
            var paths = Set(local.keys)
            for p in peers.values { paths.formUnion(p.records.paths) }
            for path in paths.sorted() { reevaluate(path, into: &out) }
            return out
        }
        // Spilled: no set of every path in memory. Each local path, a page at a time (the walk
        // reads the store by path, so the records `reevaluate` writes meanwhile do not disturb
        // it); then each peer's paths that neither this node nor an earlier peer has.
        for (path, _) in local { reevaluate(path, into: &out) }
        let ids = peers.keys.sorted()
        for (i, id) in ids.enumerated() {
            let records = peers[id]!.records
            records.forEachPath { path in
                guard !local.contains(path), !ids[..<i].contains(where: { peers[$0]?.records.sequence(of: path) != nil }) else { return }
                reevaluate(path, into: &out)
            }
        }
        return out
    }

    // MARK: local changes

    /// What the scanner saw at a path: its current state (`record` with content fields set and
    /// no version), or nil when nothing is there.
    public struct Observation: Sendable {
        public var path: String
        public var record: FileRecord?
        /// The scanner read and hashed the file (the quick check did not hold).
        public var hashed: Bool
        public init(path: String, record: FileRecord?, hashed: Bool = false) {
            self.path = path
            self.record = record
            self.hashed = hashed
        }
    }

    /// True when what the scanner saw (`seen`) is the change `old` already records: the same
    /// content and mtime (a directory's mtime does not count). Only what is local or derived may
    /// differ (the inode, or a Syncthing block list computed now that the node speaks BEP).
    static func isRecorded(_ seen: FileRecord, as old: FileRecord) -> Bool {
        !old.deleted && old.hasSameContent(as: seen) && (old.mtimeNs == seen.mtimeNs || old.kind == .directory)
    }

    /// True when an observation of `seen` would change nothing at all in `old`: the same change,
    /// the same inode, and no Syncthing block list to add. `localScan` ignores it, so a scanner
    /// may leave it out.
    public static func changesNothing(_ seen: FileRecord, in old: FileRecord) -> Bool {
        isRecorded(seen, as: old) && !hasLocalNews(seen, over: old)
    }

    /// What the scan saw that is only local or derived: a new inode, or a Syncthing block list
    /// the record lacked.
    static func hasLocalNews(_ seen: FileRecord, over old: FileRecord) -> Bool {
        old.inode != seen.inode || old.fixedBlocks.isEmpty && !seen.fixedBlocks.isEmpty
    }

    /// A scan's observations in the order to record them, renames paired: each path found
    /// holding the inode an absent path's record had (a file or directory renamed or moved) is
    /// followed at once by that absent path; other present paths keep their place, and the
    /// other absent ones come last. Records are numbered, so sent, in this order, which is what a
    /// peer needs to apply a move as renames (`attachMoveSource`): it hears of the new name and
    /// of the old name's deletion in the same index message, instead of a thousand new names
    /// first (copied, as their old names are not deleted yet) or a thousand deletions first
    /// (carried out before the new names arrive, which then come over the network).
    public static func pairingRenames(_ observations: [Observation], previous: (String) -> FileRecord?) -> [Observation] {
        var goneByInode = [UInt64: Int]()
        for (i, o) in observations.enumerated() where o.record == nil {
            if let old = previous(o.path), !old.deleted, old.inode != 0 { goneByInode[old.inode] = i }
        }
        guard !goneByInode.isEmpty else { return observations }
        var ordered = [Observation]()
        ordered.reserveCapacity(observations.count)
        var placed = Set<Int>()
        for o in observations {
            guard let seen = o.record else { continue }
            ordered.append(o)
            if seen.inode != 0, let i = goneByInode.removeValue(forKey: seen.inode) {
                ordered.append(observations[i])
                placed.insert(i)
            }
        }
        for (i, o) in observations.enumerated() where o.record == nil && !placed.contains(i) { ordered.append(o) }
        return ordered
    }

    /// Takes what the scanner saw. A change bumps this node's counter in the version vector and
    /// gets the next sequence number; an unchanged path with only a new inode is updated quietly.
    public mutating func localScan(_ observations: [Observation]) -> Output {
        var out = Output()
        for o in observations {
            let old = local[o.path]
            if let seen = o.record {
                if let old, Self.isRecorded(seen, as: old) {
                    if Self.hasLocalNews(seen, over: old) {
                        local[o.path]?.inode = seen.inode
                        if old.fixedBlocks.isEmpty { local[o.path]?.fixedBlocks = seen.fixedBlocks }
                        out.persistQuietly.append(local[o.path]!)
                    }
                    continue
                }
                var r = seen
                if let known = knownVersion(of: seen, at: o.path, over: old) {
                    // Content this node did not make: a version it already knows.
                    r.version = known.version
                    r.modifiedBy = known.modifiedBy
                    commit(r, into: &out)
                    continue
                }
                r.version = (old?.version ?? VersionVector()).bumped(by: me, atLeast: versionClock())
                r.modifiedBy = me
                commit(r, into: &out)
                out.events.append(.localChange(path: o.path, deleted: false))
            } else if let old, !old.deleted {
                var r = old
                r.deleted = true
                r.blocks = []
                r.fixedBlocks = []
                r.size = 0
                r.symlinkTarget = ""
                r.inode = 0
                if let known = knownVersion(of: nil, at: o.path, over: old) {
                    r.version = known.version
                    r.modifiedBy = known.modifiedBy
                    commit(r, into: &out)
                    continue
                }
                r.version = old.version.bumped(by: me, atLeast: versionClock())
                r.modifiedBy = me
                commit(r, into: &out)
                out.events.append(.localChange(path: o.path, deleted: true))
            }
        }
        for o in observations { reevaluate(o.path, into: &out) }
        return out
    }

    /// A version of `path` this node already knows for exactly what the scanner saw (`seen`;
    /// nil: nothing on disk), which the scan adopts instead of counting a new local edit.
    ///
    /// The rule: a node never bumps its counter for content it did not change. Content found on
    /// disk that equals a pull's intent (a pull the node made and did not get to record) or a
    /// peer's record (same bytes, mode and modification time; or absence and a peer's
    /// tombstone) is that version, not a new one: counting it as an edit made a version
    /// concurrent with every later change, and "an edit beats a delete" then brought deleted
    /// files back. Only a version that is not older than the local record qualifies (content
    /// equal to an older version is a user's revert, a real edit); when it is concurrent with
    /// the local record the two are merged, so the result still supersedes what this node held.
    /// Nil when nothing qualifies: a real local change.
    func knownVersion(of seen: FileRecord?, at path: String, over old: FileRecord?) -> FileRecord? {
        var candidates = [FileRecord]()
        if let intent = intents[path] { candidates.append(intent) }
        for peer in peers.keys.sorted() {
            if let r = peers[peer]?.records[path] { candidates.append(r) }
        }
        var best: FileRecord?
        for c in candidates where Self.sameAsSeen(c, seen) {
            if let old {
                let order = c.version.compare(to: old.version)
                guard order == .newer || order == .concurrent else { continue }
            }
            if let b = best, b.version.compare(to: c.version) != .older { continue }
            best = c
        }
        guard var known = best else { return nil }
        if let old { known.version = known.version.merged(with: old.version) }
        return known
    }

    /// True when `record` describes what the scanner saw: the same content and, for a file, the
    /// same modification time (a pull sets it exactly); for nil, a tombstone.
    static func sameAsSeen(_ record: FileRecord, _ seen: FileRecord?) -> Bool {
        guard let seen else { return record.deleted }
        guard !record.deleted, record.hasSameContent(as: seen) else { return false }
        return record.kind != .file || record.mtimeNs == seen.mtimeNs
    }

    /// Gives the record the next sequence number and stores it.
    private mutating func commit(_ record: FileRecord, into out: inout Output) {
        var r = record
        sequence += 1
        r.sequence = sequence
        local[r.path] = r
        out.persist.append(r)
    }

    // MARK: peers

    /// A peer connected with its index `indexID`. When that index is new (the peer's database
    /// was reset), its old records mean nothing: they are forgotten and the paths they named are
    /// decided again.
    @discardableResult
    public mutating func peerConnected(_ peer: NodeID, indexID: UInt64) -> Output {
        var out = Output()
        var p = peers[peer] ?? newPeerIndex()
        var forgotten = [String]()
        if p.indexID != indexID {
            forgotten = p.records.paths
            p.records.removeAll()
            p = newPeerIndex()
            p.indexID = indexID
        }
        p.connected = true
        p.caughtUp = false
        peers[peer] = p
        for path in forgotten { reevaluate(path, into: &out) }
        return out
    }

    public mutating func peerDisconnected(_ peer: NodeID) {
        peers[peer]?.connected = false
    }

    /// The `since` to ask a peer for: what we hold of its current index.
    public func indexRequest(for peer: NodeID) -> WireMessage.IndexRequest {
        let p = peers[peer]
        return .init(indexID: p?.indexID ?? 0, since: p?.maxSequence ?? 0)
    }

    /// A record by path and the sequence it had.
    public struct RecordKey: Sendable, Equatable {
        public var path: String
        public var sequence: UInt64
    }

    /// The keys of those records, in sequence order (an index backlog reads the records
    /// themselves as it sends them).
    ///
    /// With `peer`, records that peer's own index already holds at the same version are left
    /// out (no echo, as for broadcasts): a node restarted after pulling 20,000 files from its
    /// peers would otherwise send every one of them back at each connection, since the peers
    /// never had them from it. The highest key is always kept, so the peer's `since` moves up
    /// to it and the next request starts there. A peer whose index was reset is forgotten at
    /// `peerConnected`, before its request, so nothing is left out for it.
    public func keys(after request: WireMessage.IndexRequest, ourIndexID: UInt64, for peer: NodeID? = nil) -> [RecordKey] {
        // A peer that claims more of our index than there is (we lost index data and kept
        // its ID, or it is confused) gets all of it.
        let since = request.indexID == ourIndexID && request.since <= sequence ? request.since : 0
        var keys = local.keys(sequenceAbove: since).map { RecordKey(path: $0.path, sequence: $0.sequence) }
        guard let peer, let known = peers[peer]?.records, let last = keys.popLast() else { return keys }
        // The peer's record first: most paths it does not hold, and that answer is the cheaper.
        keys.removeAll { key in known[key.path].map { theirs in local[key.path]?.version == theirs.version } ?? false }
        keys.append(last)
        return keys
    }

    /// An index request's answer as the node's session sends it (`PeerSession`): the keys
    /// (`keys(after:ourIndexID:for:)`), or, once the index is spilled, a range of sequence
    /// numbers read from the store a batch at a time (`backlogBatch`): a list of a million keys
    /// took about 90 MB while a joining peer was sent everything.
    func backlog(after request: WireMessage.IndexRequest, ourIndexID: UInt64, for peer: NodeID? = nil) -> PeerSession.Backlog {
        guard local.isSpilled else { return .keys(keys(after: request, ourIndexID: ourIndexID, for: peer)) }
        let since = request.indexID == ourIndexID && request.since <= sequence ? request.since : 0
        let last = local.maxSequence
        return last > since ? .range(after: since, through: last, for: peer) : .keys([])
    }

    /// A batch of a spilled backlog: up to `limit` records numbered in (after, through], less
    /// those `peer` holds at the same version (no echo, as in `keys`), except the one numbered
    /// `through` (the peer's "since" moves up to it); and the highest number read.
    func backlogBatch(after: UInt64, through: UInt64, for peer: NodeID?, limit: Int) -> (records: [FileRecord], readThrough: UInt64) {
        let page = local.records(sequenceAfter: after, through: through, limit: limit)
        guard let end = page.last?.sequence else { return ([], through) }
        let readThrough = page.count < limit ? through : end
        guard let peer, let known = peers[peer]?.records else { return (page, readThrough) }
        return (page.filter { r in r.sequence == through || known[r.path]?.version != r.version }, readThrough)
    }

    /// Takes records a peer sent (already checked by `PathSafety`) and decides each path again.
    public mutating func peerIndex(_ peer: NodeID, records: [FileRecord], caughtUp: Bool) -> Output {
        var out = Output()
        // Mutated in place: copying the peer's index out and back would copy the whole
        // dictionary on every update.
        if peers[peer] == nil { peers[peer] = newPeerIndex() }
        var accepted = [String]()
        accepted.reserveCapacity(records.count)
        for r in records {
            // Sequence numbers only grow on the sender; an older record that arrives late
            // (reordered batches) must not replace a newer one.
            if let old = peers[peer]!.records.sequence(of: r.path), old > r.sequence { continue }
            peers[peer]!.records.set(r, box: peers[peer]!.records.isSpilled ? nil : box(for: r, from: peer))
            peers[peer]!.maxSequence = max(peers[peer]!.maxSequence, r.sequence)
            accepted.append(r.path)
        }
        if caughtUp { peers[peer]!.caughtUp = true }
        for path in accepted { reevaluate(path, into: &out) }
        return out
    }

    /// A box holding `record` (its sequence aside), shared with another peer that holds the same
    /// change, or made from this node's own record of it when that is the same change (so that
    /// its buffers, the path, version and block list, are shared too). Once a cluster converges,
    /// every peer holds the same record of each path: one copy instead of one per peer.
    func box(for record: FileRecord, from peer: NodeID) -> PeerRecords.Box {
        for (id, index) in peers where id != peer {
            if let theirs = index.records.box(of: record.path), theirs.record.isSameChange(as: record) { return theirs }
        }
        if let mine = local[record.path], mine.isSameChange(as: record) { return PeerRecords.Box(mine) }
        return PeerRecords.Box(record)
    }

    // MARK: deciding

    /// The record every node converges to for `path`, and whether this node's current content
    /// lost a conflict whose loser is to be kept.
    public func target(for path: String) -> (record: FileRecord, localLostAndKept: Bool)? {
        let current = local[path]
        var candidates = [FileRecord]()
        if let current { candidates.append(current) }
        for peer in peers.keys.sorted() {
            if let r = peers[peer]?.records[path] { candidates.append(r) }
        }
        guard !candidates.isEmpty else { return nil }
        // Only the maximal versions matter: drop every record another one descends from, and
        // duplicates of the same version. The rest are pairwise concurrent.
        var maximal = [FileRecord]()
        for c in candidates {
            if candidates.contains(where: { $0.version.compare(to: c.version) == .newer }) { continue }
            if maximal.contains(where: { $0.version == c.version }) { continue }
            maximal.append(c)
        }
        // A fixed order, the same on every node whatever it holds locally or heard first, so
        // the fold below reaches the same record everywhere.
        maximal.sort { ($0.version.description, $0.modifiedBy) < ($1.version.description, $1.modifiedBy) }
        var best = maximal[0]
        var localLost = false
        for r in maximal.dropFirst() {
            let b = best
            if b.hasSameContent(as: r) {
                // Same content made independently: not a conflict. The merged version
                // descends from both, so every holder adopts it without a transfer.
                var winner = NewestOrder.aWins(b, over: r) ? b : r
                winner.version = b.version.merged(with: r.version)
                best = winner
            } else if b.deleted != r.deleted {
                best = b.deleted ? r : b  // the edit wins over a concurrent delete
            } else {
                // A true conflict. The winner keeps its own version (no merge): a merged
                // version would look like a plain update to the loser's holders, who would
                // then overwrite their content without keeping the copy.
                let resolution = policy.resolve(Conflict(path: path, local: b, remote: r))
                let loser = resolution.winner == .local ? r : b
                best = resolution.winner == .local ? b : r
                if resolution.keepLoserCopy, let current, !current.deleted, current.kind == .file,
                   loser.hasSameContent(as: current) {
                    localLost = true
                }
            }
        }
        if let current, localLost, best.hasSameContent(as: current) { localLost = false }
        return (best, localLost)
    }

    /// What `path` needs now, given everything this node knows.
    enum Decision {
        /// Nothing: the local version is the agreed one (or newer).
        case upToDate
        /// No disk change, only the agreed record to store (a delete of something absent,
        /// the same content reached independently).
        case record(FileRecord)
        /// A change on disk.
        case job(PullJob)
    }

    /// Decides `path` from the current local and peer records. Pure: called when records
    /// change (to queue or drop the path) and again when the path's turn comes (to build the
    /// job from the freshest state; queued paths do not keep their jobs, which for 20,000
    /// pending files was the largest share of a node's memory).
    func decide(_ path: String) -> Decision? {
        guard let (target, localLost) = target(for: path) else { return nil }
        let current = local[path]
        if let current {
            switch target.version.compare(to: current.version) {
            case .equal, .older:
                // Up to date (or ahead: peers will pull from us).
                return .upToDate
            case .newer, .concurrent:
                break
            }
        }
        let currentlyAbsent = current == nil || current!.deleted
        // Nothing to do on disk: record the agreed version right away.
        if target.deleted && currentlyAbsent {
            var r = target
            r.inode = 0
            return .record(r)
        }
        if let current, !current.deleted, current.hasSameContent(as: target),
           current.kind != .file || current.mtimeNs == target.mtimeNs {
            var r = target
            r.inode = current.inode
            r.mtimeNs = current.mtimeNs
            return .record(r)
        }
        let operation: PullJob.Operation
        if target.deleted {
            operation = .delete
        } else if let current, !current.deleted, current.hasSameContent(as: target) {
            operation = .updateMetadata
        } else {
            switch target.kind {
            case .file: operation = .writeFile
            case .directory: operation = .makeDirectory
            case .symlink: operation = .makeSymlink
            }
        }
        return .job(PullJob(
            operation: operation, path: path, target: target, expectedLocal: current,
            conflictCopyPath: localLost && current != nil ? ConflictNaming.copyPath(for: path, loser: current!, winner: target) : nil))
    }

    /// Re-decides `path` and queues, re-queues or drops it.
    mutating func reevaluate(_ path: String, into out: inout Output) {
        switch decide(path) {
        case nil:
            dropPending(path)  // no record of the path anywhere any more
        case .upToDate:
            dropPending(path)
            failed[path] = nil
        case .record(let r):
            dropPending(path)
            // A job of this path is still changing the disk: its end decides again. A record
            // stored now (a tombstone for a file the job is about to write) would describe a
            // disk that is not there, and a crash before the job's end would leave the index
            // ahead of the disk (found by the chaos test).
            guard running[path] == nil else { return }
            commit(r, into: &out)
        case .job(let job):
            failed[path] = nil
            let key = sortKey(job)
            // Already queued at the same place: the job itself is rebuilt at its turn.
            if queue.key(of: path) == key { return }
            queue.insert(path, key: key, size: job.target.deleted ? 0 : job.target.size)
        }
    }

    private mutating func dropPending(_ path: String) {
        queue.remove(path)
    }

    // MARK: scheduling

    /// (class, primary): class 0 directories, 1 files/links/metadata, 2 deletions.
    struct SortKey: Comparable, Sendable {
        var phase: Int
        var primary: Int64
        static func < (a: SortKey, b: SortKey) -> Bool { (a.phase, a.primary) < (b.phase, b.primary) }
    }

    private func sortKey(_ job: PullJob) -> SortKey {
        let depth = Int64(job.path.utf8.reduce(0) { $0 + ($1 == UInt8(ascii: "/") ? 1 : 0) })
        switch job.operation {
        case .makeDirectory: return SortKey(phase: 0, primary: depth)
        case .delete: return SortKey(phase: 2, primary: -depth)
        default:
            switch order {
            case .smallestFirst: return SortKey(phase: 1, primary: Int64(clamping: job.target.size))
            case .largestFirst: return SortKey(phase: 1, primary: -Int64(clamping: job.target.size))
            case .oldestFirst: return SortKey(phase: 1, primary: job.target.mtimeNs)
            case .newestFirst: return SortKey(phase: 1, primary: job.target.mtimeNs == .min ? .max : -job.target.mtimeNs)
            case .alphabetic: return SortKey(phase: 1, primary: 0)
            }
        }
    }

    /// Jobs to start now, in pull order, up to the concurrency limit, with what a path whose turn
    /// came needs besides a job (the agreed record to store, when nothing on disk is to change
    /// any more) added to `out`. (Which peer a block is asked of is decided when the job asks:
    /// `NodeMachine`.)
    public mutating func nextJobs(into out: inout Output) -> [PullJob] {
        var jobs = [PullJob]()
        defer { queue.restoreDeferred() }
        while running.count < maxConcurrentJobs, let top = queue.first() {
            if running[top.path] != nil {
                // The path's previous job still runs; this one waits for it to report back.
                queue.deferFirst()
                continue
            }
            // Built now, from the current state (the queue keeps only where the path sits).
            let decision = decide(top.path)
            guard case .job(var job) = decision else {
                // Nothing on disk to do any more: store the agreed record, if there is one.
                dropPending(top.path)
                if case .record(let r)? = decision { commit(r, into: &out) }
                continue
            }
            if job.operation == .delete && running.values.contains(where: { $0.operation != .delete }) {
                break
            }
            // (No barrier around symlink jobs: a link made by one job cannot redirect another
            // job's write, because the folder handle resolves every path beneath the folder
            // without following links, in one step with the write; see `FolderRoot`.)
            dropPending(top.path)
            running[job.path] = job
            jobs.append(job)
        }
        return jobs
    }

    /// True when nothing is pending, running or waiting for a retry.
    public var isIdle: Bool { queue.isEmpty && running.isEmpty && failed.isEmpty }

    /// What this node still has to bring to disk: paths waiting, running or failed, and their
    /// bytes (the largest size any peer offers for a waiting path, the target's for a running
    /// one). For the dashboard's "percent in sync"; one dictionary lookup per path and peer.
    public func needSummary() -> (files: Int, bytes: UInt64) {
        // Spilled: the queue's own count and sizes, summed in SQLite (a million paths looked
        // up one by one would keep status waiting for seconds).
        if let totals = queue.spilledTotals {
            var files = totals.files + running.count, bytes = totals.bytes
            for job in running.values where !job.target.deleted { bytes += job.target.size }
            for path in failed.keys where running[path] == nil {
                files += 1
                bytes += peers.values.compactMap { $0.records[path] }.filter { !$0.deleted }.map(\.size).max() ?? 0
            }
            return (files, bytes)
        }
        var paths = Set(queue.paths ?? [])
        paths.formUnion(failed.keys)
        var bytes: UInt64 = 0
        for (path, job) in running {
            paths.remove(path)
            if !job.target.deleted { bytes += job.target.size }
        }
        for path in paths {
            bytes += peers.values.compactMap { $0.records[path] }.filter { !$0.deleted }.map(\.size).max() ?? 0
        }
        return (paths.count + running.count, bytes)
    }

    /// What this node still has to pull that `peer` offers: waiting, running or failed paths
    /// for which the peer holds a live version newer than (or concurrent with) ours. (What the
    /// peer itself lacks cannot be told from here: a SyncKit peer does not send back the
    /// records it pulled from us, so its own dashboard shows its need.)
    public func neededFrom(peer: NodeID) -> (files: Int, bytes: UInt64) {
        guard let index = peers[peer] else { return (0, 0) }
        // Spilled: what the peer offers of the queue, joined in SQLite; running and failed
        // paths are few and looked up here.
        var spilledPart: (files: Int, bytes: UInt64)?
        if let table = index.records.spillTable, queue.isSpilled, let store = spillStore {
            spilledPart = store.queueOffered(by: table)
        }
        var paths = Set<String>()
        if spilledPart == nil { queue.forEachPath { paths.insert($0) } }
        paths.formUnion(failed.keys)
        paths.formUnion(running.keys)
        var files = 0, bytes: UInt64 = 0
        for path in paths {
            guard let theirs = index.records[path], !theirs.deleted else { continue }
            if let mine = local[path] {
                let order = theirs.version.compare(to: mine.version)
                if order == .equal || order == .older { continue }
            }
            files += 1
            bytes += theirs.size
        }
        if let spilledPart { return (files + spilledPart.files, bytes + spilledPart.bytes) }
        return (files, bytes)
    }

    // MARK: moves

    /// Lets a `writeFile` job move a local file into place instead of writing a copy
    /// (`PullJob.renameFrom`): the first of `candidates` (paths of this node's files, from the
    /// node's block map) that is a live file with exactly the target's content, whose agreed
    /// next state is a deletion and which no job is changing. That is what a rename or a moved
    /// directory on a peer looks like here: a new path, and a tombstone for an old path with
    /// the same bytes. The old path's deletion then belongs to the job (the path counts as
    /// running until the job reports back), so no delete job removes the file being moved.
    /// Only for a target path that holds nothing now and keeps no conflict copy: a move never
    /// replaces anything.
    public mutating func attachMoveSource(to job: inout PullJob, candidates: [String]) {
        guard job.operation == .writeFile, job.renameFrom == nil, job.conflictCopyPath == nil,
              job.target.kind == .file, !job.target.deleted, !job.target.blocks.isEmpty,
              job.expectedLocal == nil || job.expectedLocal!.deleted, running[job.path] != nil else { return }
        for path in candidates where path != job.path && running[path] == nil {
            // The inode is known only for a file a scan or a pull saw on disk: the folder
            // checks the file is still that one before it moves it.
            guard let source = local[path], !source.deleted, source.kind == .file, source.inode != 0,
                  source.hasSameContent(as: job.target),
                  case .job(let deletion)? = decide(path), deletion.operation == .delete else { continue }
            dropPending(path)
            running[path] = deletion
            job.renameFrom = PullJob.Move(from: source, deletion: deletion.target)
            running[job.path] = job
            return
        }
    }

    /// The file at `path` was moved away by a job (`.moved`): stores the tombstone the move
    /// carried out (`PullJob.Move.deletion`), as the path's delete job stores its own target,
    /// whatever arrived for the path meanwhile. The disk holds nothing there now, and the index
    /// must say so: deciding the path from the old record instead took a peer's re-creation of
    /// the same file (a rename undone while the move ran) as already on disk, and the next scan
    /// then counted the empty path as this node's own deletion, which beat the re-creation on
    /// every node (found by a hostile test). A newer record that arrived meanwhile is then
    /// pulled as usual.
    private mutating func sourceMoved(_ path: String, applied deletion: FileRecord, into out: inout Output) {
        var r = deletion
        r.inode = 0
        commit(r, into: &out)
        out.events.append(.pulled(path: path, operation: .delete))
        reevaluate(path, into: &out)
    }

    /// The node reports how a job ended.
    public mutating func jobFinished(_ job: PullJob, outcome: PullOutcome) -> Output {
        var out = Output()
        running[job.path] = nil
        // A move's source is decided again below: gone (moved), or still there with its
        // deletion to run as its own job.
        if let move = job.renameFrom { running[move.from.path] = nil }
        switch outcome {
        case .applied(let record), .moved(let record):
            failed[job.path] = nil
            var r = record
            r.version = job.target.version
            r.modifiedBy = job.target.modifiedBy
            commit(r, into: &out)
            out.events.append(.pulled(path: job.path, operation: job.operation))
            if let copy = job.conflictCopyPath { out.events.append(.conflict(path: job.path, copyPath: copy)) }
            reevaluate(job.path, into: &out)
        case .localChanged:
            // The node rescans the path; `localScan` then decides again (and clears this).
            failed[job.path] = "the local file changed during the pull"
        case .unavailable:
            // Waits for `retryFailed` (a peer connected, or the retry timer) instead of spinning.
            failed[job.path] = "no connected peer has the content"
            out.events.append(.pullFailed(path: job.path, reason: failed[job.path]!))
        case .failed(let why):
            failed[job.path] = why
            out.events.append(.pullFailed(path: job.path, reason: why))
        }
        if let move = job.renameFrom {
            if case .moved = outcome { sourceMoved(move.from.path, applied: move.deletion, into: &out) } else { reevaluate(move.from.path, into: &out) }
        }
        return out
    }

    /// Queues the failed paths again (after a peer connected or a retry timer fired).
    public mutating func retryFailed() -> Output {
        var out = Output()
        let paths = Array(failed.keys)
        failed.removeAll()
        for p in paths { reevaluate(p, into: &out) }
        return out
    }
}
