/// Inputs that tasks outside the node's actor post for the machine, handed over a burst at a
/// time: the first input of a burst makes the one hop onto the actor, and every input posted
/// by the time that hop runs goes to the machine in the same turn. Under load (a peer's index,
/// a few thousand block answers) that is one actor turn per burst instead of one per input.
///
/// Order: inputs are handed over in the order they were posted, and the node empties the
/// mailbox before it handles any input of its own, so an input posted before something the
/// actor does (a connection's end, say) is seen before it.
///
/// Backpressure: a poster learns when the mailbox holds `limit` inputs or more, or index
/// updates carrying `recordLimit` records or more, and then waits for the node to take them,
/// so a fast peer cannot queue without bound. Records count apart because an index update
/// holds up to 1,000 decoded records: 512 of them waiting (a peer sending a million-file index
/// faster than the node decides it) were half a million records in memory at once.
final class InputMailbox: Sendable {
    private struct State {
        var inputs: [NodeInput] = []
        var records = 0
        var hopPending = false
    }

    let limit: Int
    let recordLimit: Int
    private let state = Locked(State())

    init(limit: Int = 512, recordLimit: Int = 16_384) {
        self.limit = limit
        self.recordLimit = recordLimit
    }

    /// The records an input carries (index updates), for `recordLimit`.
    static func records(in input: NodeInput) -> Int {
        if case .received(_, .indexUpdate(let update), _) = input { return update.records.count }
        return 0
    }

    /// What the poster must do after posting.
    enum Next {
        /// Someone else's hop will take it.
        case nothing
        /// Hop onto the actor to hand the burst over (this input started it).
        case hop
        /// The mailbox is full: hop and wait for it to be taken.
        case hopAndWait
    }

    func post(_ input: NodeInput) -> Next {
        let records = Self.records(in: input)
        return state.withLock { s in
            s.inputs.append(input)
            s.records += records
            if s.inputs.count >= limit || s.records >= recordLimit { s.hopPending = true; return .hopAndWait }
            if s.hopPending { return .nothing }
            s.hopPending = true
            return .hop
        }
    }

    /// Everything posted so far, in order; the next post starts a new burst.
    func takeAll() -> [NodeInput] {
        state.withLock { s in
            defer { s.inputs.removeAll(keepingCapacity: true); s.records = 0; s.hopPending = false }
            return s.inputs
        }
    }
}

extension SyncNode {
    /// Posts an input from outside the actor (see `InputMailbox`): returns at once, or once
    /// the node has taken a full mailbox (the poster, a peer's receive loop, then reads no
    /// further until the node has caught up).
    nonisolated func post(_ input: NodeInput) async {
        switch mailbox.post(input) {
        case .nothing: return
        case .hop: Task { await self.takePosted() }
        case .hopAndWait: await takePosted()
        }
    }

    /// Like `post`, for callers that cannot wait (a continuation's body, a cancellation handler).
    nonisolated func postNow(_ input: NodeInput) {
        if mailbox.post(input) != .nothing { Task { await self.takePosted() } }
    }

    /// Hands everything posted so far to the machine (nothing if an earlier hop took it).
    func takePosted() {
        let posted = mailbox.takeAll()
        if !posted.isEmpty { handle(batch: posted) }
    }
}
