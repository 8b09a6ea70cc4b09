import Foundation
import NIOCore
import SyncKit
import SyncKitTesting
import Testing
import TransportTCP

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// TCPTransport on 127.0.0.1: the conformance kit, plus what only a byte stream can get wrong
/// (hostile length prefixes, garbage) and the port-in-use error.
@Suite("TCP transport")
struct TCPTransportTests {
    static let loopback: @Sendable (Int) -> PeerEndpoint = { PeerEndpoint(host: "127.0.0.1", port: $0) }

    @Test("passes TransportConformance over 127.0.0.1")
    func conformance() async throws {
        try await TransportConformance(
            makeTransport: { TCPTransport() },
            endpointFor: Self.loopback,
            options: .init(maximumFrameSize: Frame.defaultMaximumSize)
        ).run()
    }

    @Test("passes TransportConformance over TLS 1.3")
    func conformanceOverTLS() async throws {
        // Each transport made by the kit has an identity of its own, as nodes do.
        try await TransportConformance(
            makeTransport: { TCPTransport(configuration: .init(tls: TLSSettings(identity: try NodeIdentity.make()))) },
            endpointFor: Self.loopback,
            options: .init(maximumFrameSize: Frame.defaultMaximumSize)
        ).run()
    }

    /// Over TLS each end learns the other's node ID from its certificate, both derive the same
    /// connection-unique binding, and another connection gets another binding.
    @Test func tlsProvesEachEndsIdentityAndBindsTheConnection() async throws {
        let (a, b) = (try NodeIdentity.make(), try NodeIdentity.make())
        let server = TCPTransport(configuration: .init(tls: TLSSettings(identity: a)))
        let client = TCPTransport(configuration: .init(tls: TLSSettings(identity: b)))
        let listener = try await server.listen(port: 0)
        var accepted = listener.channels.makeAsyncIterator()
        let first = try await client.connect(to: Self.loopback(listener.port))
        let firstServer = try #require(await accepted.next())
        #expect(first.security?.peer == a.id, "the client sees the server's certificate")
        #expect(firstServer.security?.peer == b.id, "the server sees the client's certificate")
        #expect(first.security?.binding == firstServer.security?.binding && first.security?.binding.count == 32)
        #expect(first.security?.applicationProtocol == TLSSettings.syncKitProtocol)
        let second = try await client.connect(to: Self.loopback(listener.port))
        #expect(second.security?.binding != first.security?.binding, "each connection has its own")
        await first.close()
        await second.close()
        await listener.close()
    }

    /// A plain-TCP client cannot talk to a TLS listener: nothing but a failed handshake.
    @Test func aPlainClientGetsNothingFromATLSListener() async throws {
        let server = TCPTransport(configuration: .init(tls: TLSSettings(identity: try NodeIdentity.make())))
        let listener = try await server.listen(port: 0)
        let plain = try await TCPTransport().connect(to: Self.loopback(listener.port))
        try? await plain.send(Frame(type: 1, payload: ByteBuffer(bytes: [1, 2, 3])))
        var frames = 0
        do { for try await _ in plain.inbound { frames += 1 } } catch {}
        #expect(frames == 0)
        await listener.close()
    }

    @Test("passes TransportConformance with a small frame limit and \"localhost\"")
    func conformanceSmallLimit() async throws {
        let configuration = TCPTransport.Configuration(maximumFrameSize: 2 << 20)
        try await TransportConformance(
            makeTransport: { TCPTransport(configuration: configuration) },
            endpointFor: { PeerEndpoint(host: "localhost", port: $0) },
            options: .init(maximumFrameSize: 2 << 20, largeFramePayloadSize: (2 << 20) - 1)
        ).run()
    }

    @Test("a second listener on a port in use throws SyncError(.transport) saying so")
    func portInUse() async throws {
        let first = try await TCPTransport().listen(port: 0)
        let error = await #expect(throws: SyncError.self) {
            _ = try await TCPTransport().listen(port: first.port)
        }
        #expect(error?.code == .transport)
        #expect(error?.message == "port \(first.port) is already in use")
        await first.close()
        // Free again once closed (SO_REUSEADDR).
        let again = try await TCPTransport().listen(port: first.port)
        #expect(again.port == first.port)
        await again.close()
    }

    @Test("connecting to a port where nothing listens throws SyncError(.transport)")
    func connectRefused() async throws {
        let listener = try await TCPTransport().listen(port: 0)
        let port = listener.port
        await listener.close()
        let error = await #expect(throws: SyncError.self) {
            _ = try await TCPTransport().connect(to: Self.loopback(port))
        }
        #expect(error?.code == .transport)
        #expect(error?.message.contains("127.0.0.1:\(port)") == true)
    }

    @Test("a header announcing 1 GiB ends the connection at once with WireError(.frameTooLarge)")
    func hugeLengthPrefix() async throws {
        let listener = try await TCPTransport().listen(port: 0)
        // 0x40000000 = 1 GiB, then a type byte and a few payload bytes; nothing more follows.
        let client = Task { await RawClient.exchange(port: listener.port, bytes: [0x40, 0, 0, 0, 1, 2, 3]) }
        let server = try #require(await Self.accept(listener))
        let ending = try await Self.ending(of: server)
        let wireError = try #require(ending as? WireError, "inbound ended with \(String(describing: ending))")
        #expect(wireError.code == .frameTooLarge)
        // The server closed the socket without waiting for the gigabyte.
        #expect(await client.value == .closedByServer)
        await listener.close()
    }

    @Test("a zero length prefix is malformed and ends the connection")
    func zeroLengthPrefix() async throws {
        let listener = try await TCPTransport().listen(port: 0)
        let client = Task { await RawClient.exchange(port: listener.port, bytes: [0, 0, 0, 0]) }
        let server = try #require(await Self.accept(listener))
        let ending = try await Self.ending(of: server)
        #expect((ending as? WireError)?.code == .malformed)
        #expect(await client.value == .closedByServer)
        await listener.close()
    }

    @Test("random garbage ends its connection without harming the listener", arguments: 0..<8)
    func garbage(seed: UInt64) async throws {
        let listener = try await TCPTransport().listen(port: 0)
        var generator = SplitMix64(seed: seed)
        let garbage = (0..<Int(generator.next() % 4096 + 1)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        let client = Task { await RawClient.exchange(port: listener.port, bytes: garbage, thenClose: true) }
        let server = try #require(await Self.accept(listener))
        // Whatever it decodes to (an error, a few frames then an error or the end), the
        // connection ends promptly.
        _ = try await Self.ending(of: server)
        _ = await client.value
        // The listener still serves well-formed peers.
        let good = try await TCPTransport().connect(to: Self.loopback(listener.port))
        let accepted = try #require(await Self.accept(listener))
        let frame = Frame(type: 7, payload: ByteBuffer(string: "still fine"))
        try await good.send(frame)
        var inbound = accepted.inbound.makeAsyncIterator()
        #expect(try await inbound.next() == frame)
        await good.close()
        await accepted.close()
        await listener.close()
    }

    @Test("a peer that closes in the middle of a frame ends inbound with WireError(.truncated)")
    func truncatedFrame() async throws {
        let listener = try await TCPTransport().listen(port: 0)
        let client = Task { await RawClient.exchange(port: listener.port, bytes: [0, 0, 0, 10, 1, 2], thenClose: true) }
        let server = try #require(await Self.accept(listener))
        let ending = try await Self.ending(of: server)
        #expect((ending as? WireError)?.code == .truncated)
        _ = await client.value
        await listener.close()
    }

    @Test("send refuses a frame over the configured limit")
    func oversizedSend() async throws {
        let transport = TCPTransport(configuration: .init(maximumFrameSize: 1024))
        let listener = try await transport.listen(port: 0)
        let channel = try await transport.connect(to: Self.loopback(listener.port))
        var payload = ByteBuffer()
        payload.writeRepeatingByte(0, count: 1024)
        let error = await #expect(throws: WireError.self) { try await channel.send(Frame(type: 1, payload: payload)) }
        #expect(error?.code == .frameTooLarge)
        await channel.close()
        await listener.close()
    }

    // MARK: - Helpers

    /// The first channel the listener accepts (within 60 s: it comes in milliseconds when a
    /// thread is free, but this suite shares two cores with the heavy tests of the run, and a
    /// CI run once waited more than 5 s for one).
    static func accept(_ listener: any PeerListener) async -> (any PeerChannel)? {
        await withTaskGroup(of: (any PeerChannel)?.self) { group in
            group.addTask {
                for await channel in listener.channels { return channel }
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(60))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }

    /// Reads `channel.inbound` to its end (within 30 s, generous as `accept`); returns the error
    /// it ended with, if any.
    static func ending(of channel: any PeerChannel) async throws -> (any Error)? {
        try await withThrowingTaskGroup(of: (any Error)?.self) { group in
            group.addTask {
                do {
                    for try await _ in channel.inbound {}
                    return nil
                } catch {
                    return error
                }
            }
            group.addTask {
                try await Task.sleep(for: .seconds(30))
                throw TimedOut()
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }

    struct TimedOut: Error, CustomStringConvertible {
        var description: String { "inbound did not end within 30 s" }
    }
}

/// A deterministic byte source for the garbage test (SplitMix64).
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A plain blocking POSIX client, so the tests can send bytes no well-behaved `TCPTransport`
/// would. It runs on its own thread, never on the cooperative pool.
enum RawClient {
    enum Outcome: Equatable, Sendable {
        /// The server closed the connection (EOF or reset).
        case closedByServer
        /// The client closed first (asked to) or nothing happened within 30 s.
        case clientClosed
        case timedOut
        case failed(String)
    }

    /// Connects to 127.0.0.1:`port`, writes `bytes`, then either closes (`thenClose`) or waits
    /// up to 30 s for the server to close the connection.
    static func exchange(port: Int, bytes: [UInt8], thenClose: Bool = false) async -> Outcome {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(returning: run(port: port, bytes: bytes, thenClose: thenClose))
            }
        }
    }

    private static func run(port: Int, bytes: [UInt8], thenClose: Bool) -> Outcome {
        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { return .failed("socket: errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { return .failed("connect: errno \(errno)") }
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let sent = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        guard sent == bytes.count else { return .failed("send: errno \(errno)") }
        if thenClose { return .clientClosed }
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let received = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if received == 0 { return .closedByServer }
            if received < 0 {
                if errno == ECONNRESET { return .closedByServer }
                if errno == EAGAIN || errno == EWOULDBLOCK { return .timedOut }
                return .failed("recv: errno \(errno)")
            }
        }
    }
}
