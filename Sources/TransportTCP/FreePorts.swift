import Foundation
import SyncKit

extension TCPTransport {
    /// `count` distinct TCP ports that are free on 127.0.0.1 right now, found by binding to port
    /// 0 and reading what the kernel picked (all sockets stay bound until every port is found,
    /// so no port is returned twice). They are released before returning, so another process
    /// could take one in between: good for demos and tests, which then bind them at once.
    public static func freeLoopbackPorts(_ count: Int) throws -> [Int] {
        var ports = [Int]()
        var sockets = [Int32]()
        defer { for s in sockets { close(s) } }
        for _ in 0..<count {
            let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard s >= 0 else { throw SyncError(.transport, "cannot open a socket to find a free port") }
            sockets.append(s)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let ok = withUnsafeMutablePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, length) == 0 && getsockname(s, $0, &length) == 0 }
            }
            guard ok else { throw SyncError(.transport, "cannot find a free port on 127.0.0.1") }
            ports.append(Int(UInt16(bigEndian: addr.sin_port)))
        }
        return ports
    }
}
