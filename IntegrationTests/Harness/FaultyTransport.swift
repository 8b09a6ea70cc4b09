import Foundation
import NIOCore
import SyncKit

/// Wraps any transport to cut and heal links between named nodes and to count bytes, so the
/// same scenarios run over the in-memory transport and over real TCP.
///
/// Every channel a node dials is registered with the pair (dialer, dialed); `cut(a, b)` closes
/// those of the pair in both directions (closing one end closes the link for both) and makes new
/// dials between them fail until `heal(a, b)`. Frames are counted on send and on receive.
final class FaultInjector: @unchecked Sendable {
    private let lock = NSLock()
    private var ports: [Int: String] = [:]
    private var cuts: Set<[String]> = []
    private var channels: [(from: String, to: String, channel: any PeerChannel)] = []
    private var sent: [String: Int] = [:]
    private var received: [String: Int] = [:]

    func register(port: Int, name: String) { lock.withLock { ports[port] = name } }
    func name(ofPort port: Int) -> String? { lock.withLock { ports[port] } }
    func isCut(_ a: String, _ b: String) -> Bool { lock.withLock { cuts.contains([a, b].sorted()) } }

    func cut(_ a: String, _ b: String) async {
        let victims = lock.withLock { () -> [any PeerChannel] in
            cuts.insert([a, b].sorted())
            return channels.filter { Set([$0.from, $0.to]) == Set([a, b]) }.map(\.channel)
        }
        for c in victims { await c.close() }
    }

    func heal(_ a: String, _ b: String) { lock.withLock { _ = cuts.remove([a, b].sorted()) } }

    func track(_ channel: any PeerChannel, from: String, to: String) {
        lock.withLock { channels.append((from, to, channel)) }
    }

    func countSent(_ name: String, _ bytes: Int) { lock.withLock { sent[name, default: 0] += bytes } }
    func countReceived(_ name: String, _ bytes: Int) { lock.withLock { received[name, default: 0] += bytes } }
    func bytesSent(by name: String) -> Int { lock.withLock { sent[name] ?? 0 } }
    func bytesReceived(by name: String) -> Int { lock.withLock { received[name] ?? 0 } }
    func resetCounters() {
        lock.withLock {
            sent.removeAll()
            received.removeAll()
        }
    }
}

struct FaultyTransport: SyncTransport {
    let inner: any SyncTransport
    let name: String
    let injector: FaultInjector

    func listen(port: Int) async throws -> any PeerListener {
        let listener = try await inner.listen(port: port)
        injector.register(port: listener.port, name: name)
        return CountingListener(inner: listener, name: name, injector: injector)
    }

    func connect(to endpoint: PeerEndpoint) async throws -> any PeerChannel {
        let target = injector.name(ofPort: endpoint.port) ?? "?"
        if injector.isCut(name, target) { throw SyncError(.transport, "link \(name)-\(target) is cut by the test") }
        let channel = CountingChannel(inner: try await inner.connect(to: endpoint), name: name, injector: injector)
        injector.track(channel, from: name, to: target)
        if injector.isCut(name, target) { await channel.close() }
        return channel
    }
}

struct CountingListener: PeerListener {
    let inner: any PeerListener
    let name: String
    let injector: FaultInjector
    var port: Int { inner.port }
    var channels: AsyncStream<any PeerChannel> {
        let name = self.name, injector = self.injector
        let (stream, continuation) = AsyncStream.makeStream(of: (any PeerChannel).self)
        let task = Task {
            for await c in inner.channels { continuation.yield(CountingChannel(inner: c, name: name, injector: injector)) }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }
    func close() async { await inner.close() }
}

struct CountingChannel: PeerChannel {
    let inner: any PeerChannel
    let name: String
    let injector: FaultInjector
    var remoteDescription: String { inner.remoteDescription }
    var security: PeerChannelSecurity? { inner.security }
    var inbound: AsyncThrowingStream<Frame, any Error> {
        let name = self.name, injector = self.injector, source = inner.inbound
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    for try await frame in source {
                        injector.countReceived(name, frame.wireSize)
                        continuation.yield(frame)
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
    func send(_ frame: Frame) async throws {
        try await inner.send(frame)
        injector.countSent(name, frame.wireSize)
    }
    func close() async { await inner.close() }
}
