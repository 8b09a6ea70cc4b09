import Dispatch
import Foundation
import SyncKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Host-name resolution and local addresses for `StaticDiscovery`, with the system resolver.
enum SystemResolver {
    /// Resolves `host` with getaddrinfo(3) to numeric addresses, IPv4 preferred: the IPv4
    /// addresses when there are any, else the IPv6 ones. Sorted and without duplicates.
    ///
    /// getaddrinfo blocks (a DNS query can take seconds), so it runs on a Dispatch worker, never
    /// on the cooperative pool. Cancelling the caller returns at once with `CancellationError`;
    /// the lookup itself then finishes in the background and its answer is dropped.
    static func resolve(_ host: String) async throws -> [String] {
        let once = Locked<CheckedContinuation<[String], any Error>?>(nil)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                once.withLock { $0 = continuation }
                if Task.isCancelled {
                    takeOnce(once)?.resume(throwing: CancellationError())
                    return
                }
                // A thread of its own, not Dispatch's global queue: that queue's few threads are
                // the cooperative pool's on Linux, and work that fills them (a simulation's
                // `concurrentPerform` in the test run) held lookups of 127.0.0.1 back for 30 s.
                Thread.detachNewThread {
                    let result = Result { try lookUp(host) }
                    takeOnce(once)?.resume(with: result)
                }
            }
        } onCancel: {
            takeOnce(once)?.resume(throwing: CancellationError())
        }
    }

    /// Takes the continuation out of `box`, so exactly one of the racing parties resumes it.
    private static func takeOnce(
        _ box: Locked<CheckedContinuation<[String], any Error>?>
    ) -> CheckedContinuation<[String], any Error>? {
        box.withLock { stored in
            defer { stored = nil }
            return stored
        }
    }

    /// The blocking part of `resolve`.
    static func lookUp(_ host: String) throws -> [String] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Glibc) || canImport(Musl)
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
        hints.ai_socktype = SOCK_STREAM
        #endif
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &list)
        guard status == 0 else {
            let reason = String(cString: gai_strerror(status))
            throw SyncError(.transport, "cannot resolve \(host): \(reason)")
        }
        defer { freeaddrinfo(list) }
        var v4: Set<String> = []
        var v6: Set<String> = []
        var entry = list
        while let info = entry?.pointee {
            if let address = info.ai_addr {
                switch Int32(address.pointee.sa_family) {
                case AF_INET:
                    address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                        var raw = $0.pointee.sin_addr
                        if let text = numeric(AF_INET, &raw, length: INET_ADDRSTRLEN) { v4.insert(text) }
                    }
                case AF_INET6:
                    address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                        var raw = $0.pointee.sin6_addr
                        if let text = numeric(AF_INET6, &raw, length: INET6_ADDRSTRLEN) { v6.insert(text) }
                    }
                default:
                    break
                }
            }
            entry = info.ai_next
        }
        return (v4.isEmpty ? v6 : v4).sorted()
    }

    /// The addresses of this host's interfaces (getifaddrs(3)), for telling whether a listed
    /// peer is in fact this node.
    static func localAddresses() -> Set<String> {
        var addresses: Set<String> = ["127.0.0.1", "::1"]
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return addresses }
        defer { freeifaddrs(list) }
        var entry = list
        while let interface = entry?.pointee {
            if let address = interface.ifa_addr {
                switch Int32(address.pointee.sa_family) {
                case AF_INET:
                    address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                        var raw = $0.pointee.sin_addr
                        if let text = numeric(AF_INET, &raw, length: INET_ADDRSTRLEN) { addresses.insert(text) }
                    }
                case AF_INET6:
                    address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                        var raw = $0.pointee.sin6_addr
                        if let text = numeric(AF_INET6, &raw, length: INET6_ADDRSTRLEN) { addresses.insert(text) }
                    }
                default:
                    break
                }
            }
            entry = interface.ifa_next
        }
        return addresses
    }

    /// Whether `address` is one of this host's: a loopback address or one in `local`.
    static func isLocal(_ address: String, in local: Set<String>) -> Bool {
        address.hasPrefix("127.") || local.contains(address)
    }

    /// inet_ntop(3) of one raw address.
    private static func numeric<Raw>(_ family: Int32, _ raw: inout Raw, length: Int32) -> String? {
        var text = [CChar](repeating: 0, count: Int(length))
        let converted = withUnsafeBytes(of: &raw) { bytes in
            inet_ntop(family, bytes.baseAddress, &text, socklen_t(length)) != nil
        }
        guard converted else { return nil }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
