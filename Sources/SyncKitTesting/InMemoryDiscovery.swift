import SyncKit

/// A shared "LAN" for `InMemoryDiscovery`: every node whose event stream is running is
/// registered here, and each sees all the others come and go.
///
/// A node appears as `PeerEndpoint(host: "memory", port: announcement.port, nodeID:)`, which an
/// `InMemoryTransport` on the same test can dial (it connects by port).
public final class InMemoryDiscoveryBus: Sendable {
    private struct Member {
        var announcement: LocalAnnouncement
        var continuation: AsyncStream<DiscoveryEvent>.Continuation
    }

    private struct State {
        var nextID: UInt64 = 0
        var members: [UInt64: Member] = [:]
    }

    private let state = Locked(State())

    /// Creates an empty bus.
    public init() {}

    /// A discovery that announces on this bus.
    public func discovery() -> InMemoryDiscovery {
        InMemoryDiscovery(bus: self)
    }

    /// How many event streams are registered now. Drops when a stream is terminated, which is
    /// how the conformance kit checks that a terminated stream stops announcing.
    public var registeredCount: Int {
        state.withLock { $0.members.count }
    }

    /// The endpoint under which the bus reports a node that announces `announcement`.
    public static func endpoint(for announcement: LocalAnnouncement) -> PeerEndpoint {
        PeerEndpoint(host: "memory", port: announcement.port, nodeID: announcement.nodeID)
    }

    func register(_ me: LocalAnnouncement) -> AsyncStream<DiscoveryEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: DiscoveryEvent.self)
        let myEndpoint = Self.endpoint(for: me)
        // Yield outside the lock: a stream's onTermination may run synchronously and take it.
        let (id, others) = state.withLock { state -> (UInt64, [Member]) in
            state.nextID += 1
            let others = state.members.values.filter { $0.announcement.nodeID != me.nodeID }
            state.members[state.nextID] = Member(announcement: me, continuation: continuation)
            return (state.nextID, Array(others))
        }
        for other in others {
            continuation.yield(.found(Self.endpoint(for: other.announcement)))
            other.continuation.yield(.found(myEndpoint))
        }
        continuation.onTermination = { [weak self] _ in
            self?.unregister(id: id, endpoint: myEndpoint)
        }
        return stream
    }

    private func unregister(id: UInt64, endpoint: PeerEndpoint) {
        let others = state.withLock { state -> [Member] in
            guard state.members.removeValue(forKey: id) != nil else { return [] }
            return state.members.values.filter { $0.announcement.nodeID != endpoint.nodeID }
        }
        for other in others { other.continuation.yield(.lost(endpoint)) }
    }
}

/// A `PeerDiscovery` for tests: nodes in one process find each other through a shared
/// `InMemoryDiscoveryBus`, immediately and without any network.
///
/// While a node's `events(announcing:)` stream runs, the other nodes get `.found` for it (and it
/// gets `.found` for each of them, including later joiners); when the stream is terminated the
/// others get `.lost`. A node never sees itself (nor another registration with its node ID).
public struct InMemoryDiscovery: PeerDiscovery {
    /// The bus this discovery announces on.
    public let bus: InMemoryDiscoveryBus

    /// A discovery on `bus`.
    public init(bus: InMemoryDiscoveryBus) {
        self.bus = bus
    }

    /// Registers `me` on the bus for as long as the returned stream runs.
    public func events(announcing me: LocalAnnouncement) -> AsyncStream<DiscoveryEvent> {
        bus.register(me)
    }
}
