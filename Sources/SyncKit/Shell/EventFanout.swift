import Foundation

/// Hands each of a node's events to every subscriber's stream (`SyncNode.events()`).
final class EventFanout: Sendable {
    private let subscribers = Locked<[UUID: AsyncStream<SyncEvent>.Continuation]>([:])

    /// A new stream of the events from now on (keeps the newest 10,000 if it is not read).
    func subscribe() -> AsyncStream<SyncEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: SyncEvent.self, bufferingPolicy: .bufferingNewest(10_000))
        let key = UUID()
        subscribers.withLock { $0[key] = continuation }
        continuation.onTermination = { [weak self] _ in self?.subscribers.withLock { _ = $0.removeValue(forKey: key) } }
        return stream
    }

    func yield(_ event: SyncEvent) {
        for c in subscribers.withLock({ Array($0.values) }) { c.yield(event) }
    }

    /// Ends every stream (the node stopped).
    func finish() {
        for c in subscribers.withLock({ s in defer { s.removeAll() }; return Array(s.values) }) { c.finish() }
    }
}
