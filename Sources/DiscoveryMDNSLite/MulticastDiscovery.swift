import Foundation
import Logging
import NIOCore
import NIOPosix
import SyncKit

/// Finds the nodes of the cluster on the LAN with multicast DNS service discovery
/// (`_synckit._tcp.local.`), and announces this one, interoperably with avahi, Bonjour and
/// python-zeroconf. The protocol logic is `MDNSState`; this type owns the sockets and timers.
///
/// One UDP socket per interface, bound to port 5353 with SO_REUSEADDR and SO_REUSEPORT (so an
/// avahi daemon on the same host keeps working), joined to 224.0.0.251 on that interface, with
/// the interface as the multicast source and an IP TTL of 255 (RFC 6762 section 11); when the
/// interface has IPv6, a second socket does the same on ff02::fb and AAAA records are announced.
/// IPv4 is required; peers are dialed on their IPv4 address, or a routable IPv6 one.
public struct MulticastDiscovery: PeerDiscovery {
    public struct Configuration: Sendable {
        /// Interfaces to use by name; empty: every multicast-capable, non-loopback IPv4 one.
        public var interfaces: [String]
        public var serviceType: String
        /// Time to live of SRV and A records (RFC 6762 recommends 120 s).
        public var hostTTL: UInt32
        /// Time to live of PTR and TXT records (4,500 s recommended).
        public var otherTTL: UInt32
        /// The UDP port: 5353 on a real LAN; tests on one host may use another.
        public var port: Int

        public init(interfaces: [String] = [], serviceType: String = "_synckit._tcp.local", hostTTL: UInt32 = 120, otherTTL: UInt32 = 4500, port: Int = 5353) {
            self.interfaces = interfaces
            self.serviceType = serviceType
            self.hostTTL = hostTTL
            self.otherTTL = otherTTL
            self.port = port
        }
    }

    public let configuration: Configuration
    let logger: Logger

    public init(configuration: Configuration = Configuration(), logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// The interfaces this discovery would use, for validation and status.
    public func selectedInterfaces() throws -> [String] {
        try Self.devices(for: configuration).map(\.name)
    }

    struct Device: Sendable {
        var name: String
        var address: [UInt8]
        var netmask: [UInt8]
        var socketAddress: SocketAddress
        var device: NIONetworkDevice
        /// IPv6 addresses of the interface (16 bytes) with their masks, and a device entry
        /// for joining ff02::fb; empty when the interface has no IPv6.
        var ipv6: [(address: [UInt8], netmask: [UInt8])] = []
        var ipv6Device: NIONetworkDevice?
    }

    static func devices(for configuration: Configuration) throws -> [Device] {
        let all = try System.enumerateDevices()
        var out = [Device]()
        for d in all {
            guard case .v4(let v4)? = d.address, let mask = d.netmask, case .v4(let m) = mask else { continue }
            let address = withUnsafeBytes(of: v4.address.sin_addr.s_addr) { Array($0) }
            let netmask = withUnsafeBytes(of: m.address.sin_addr.s_addr) { Array($0) }
            if configuration.interfaces.isEmpty {
                guard d.multicastSupported, address[0] != 127 else { continue }
            } else {
                guard configuration.interfaces.contains(d.name) else { continue }
            }
            if out.contains(where: { $0.name == d.name }) { continue }
            out.append(Device(name: d.name, address: address, netmask: netmask, socketAddress: d.address!, device: d))
        }
        // IPv6 addresses of the chosen interfaces (an interface is listed once per address).
        for d in all {
            guard case .v6(let v6)? = d.address, let i = out.firstIndex(where: { $0.name == d.name }) else { continue }
            let address = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            var mask = [UInt8](repeating: 0xff, count: 16)
            if case .v6(let m)? = d.netmask { mask = withUnsafeBytes(of: m.address.sin6_addr) { Array($0) } }
            out[i].ipv6.append((address, mask))
            if out[i].ipv6Device == nil { out[i].ipv6Device = d }
        }
        if !configuration.interfaces.isEmpty {
            for name in configuration.interfaces where !out.contains(where: { $0.name == name }) {
                throw SyncError(.configuration, "interface \(name) does not exist or has no IPv4 address")
            }
        }
        return out
    }

    public func events(announcing me: LocalAnnouncement) -> AsyncStream<DiscoveryEvent> {
        let (stream, continuation) = AsyncStream.makeStream(of: DiscoveryEvent.self)
        let configuration = self.configuration
        let logger = self.logger
        let goodbyes = Locked<[GoodbyeSender]>([])
        let task = Task {
            do {
                let devices = try Self.devices(for: configuration)
                if devices.isEmpty { logger.warning("mDNS: no multicast-capable IPv4 interface; nothing will be found") }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for device in devices {
                        let goodbye = GoodbyeSender()
                        goodbyes.withLock { $0.append(goodbye) }
                        group.addTask {
                            let session = MDNSInterfaceSession(device: device, me: me, configuration: configuration, logger: logger, events: continuation, goodbye: goodbye)
                            try await session.run()
                        }
                    }
                    try await group.waitForAll()
                }
            } catch is CancellationError {
            } catch {
                logger.error("mDNS discovery stopped", metadata: ["error": "\(error)"])
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in
            // The goodbye goes out before the consumer's shutdown goes on (and the process
            // perhaps exits): sent synchronously here, not by the cancelled task.
            for g in goodbyes.withLock({ $0 }) { g.send() }
            task.cancel()
        }
        return stream
    }
}

/// mDNS on one interface: its sockets (IPv4, and IPv6 when the interface has it), the timers,
/// and the `MDNSState` they drive.
actor MDNSInterfaceSession {
    typealias Datagrams = NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>
    let device: MulticastDiscovery.Device
    let configuration: MulticastDiscovery.Configuration
    let logger: Logger
    let events: AsyncStream<DiscoveryEvent>.Continuation
    let goodbye: GoodbyeSender
    var state: MDNSState
    var probing = true
    var outbound4: NIOAsyncChannelOutboundWriter<AddressedEnvelope<ByteBuffer>>?
    var outbound6: NIOAsyncChannelOutboundWriter<AddressedEnvelope<ByteBuffer>>?
    let group4: SocketAddress
    let group6: SocketAddress

    init(device: MulticastDiscovery.Device, me: LocalAnnouncement, configuration: MulticastDiscovery.Configuration, logger: Logger, events: AsyncStream<DiscoveryEvent>.Continuation, goodbye: GoodbyeSender) {
        self.device = device
        self.goodbye = goodbye
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "mdns.interface"] = "\(device.name)"
        self.logger = logger
        self.events = events
        var settings = MDNSState.Settings()
        settings.serviceType = DNSName(configuration.serviceType)
        settings.hostTTL = configuration.hostTTL
        settings.otherTTL = configuration.otherTTL
        state = MDNSState(me: me, address: device.address, netmask: device.netmask, ipv6: device.ipv6, settings: settings)
        group4 = try! SocketAddress(ipAddress: "224.0.0.251", port: configuration.port)
        group6 = try! SocketAddress(ipAddress: "ff02::fb", port: configuration.port)
    }

    /// A UDP socket on the mDNS port, shared with other responders (SO_REUSEADDR/PORT).
    func bind(host: String) async throws -> Datagrams {
        try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .channelOption(ChannelOptions.Types.SocketOption(level: NIOBSDSocket.OptionLevel(rawValue: SOL_SOCKET), name: NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: 1)
            .channelInitializer { channel in
                // An IPv6 socket must not also take the IPv4 traffic of the other socket.
                host == "::" ? channel.setOption(ChannelOptions.Types.SocketOption(level: NIOBSDSocket.OptionLevel(rawValue: Int32(IPPROTO_IPV6)), name: NIOBSDSocket.Option(rawValue: IPV6_V6ONLY)), value: 1) : channel.eventLoop.makeSucceededVoidFuture()
            }
            .bind(host: host, port: configuration.port) { channel in
                channel.eventLoop.makeCompletedFuture { try Datagrams(wrappingChannelSynchronously: channel) }
            }
    }

    func run() async throws {
        let v4 = try await bind(host: "0.0.0.0")
        try await (v4.channel as? any MulticastChannel)?.joinGroup(group4, device: device.device).get()
        if let options = v4.channel as? any SocketOptionProvider {
            var addr = in_addr()
            withUnsafeMutableBytes(of: &addr.s_addr) { raw in for i in 0..<4 { raw[i] = device.address[i] } }
            try await options.setIPMulticastIF(addr).get()
            try await options.setIPMulticastTTL(255).get()
            try await options.setIPMulticastLoop(1).get()
        }
        var v6: Datagrams?
        if let d6 = device.ipv6Device {
            do {
                let channel = try await bind(host: "::")
                try await (channel.channel as? any MulticastChannel)?.joinGroup(group6, device: d6).get()
                if let options = channel.channel as? any SocketOptionProvider {
                    try await options.setIPv6MulticastIF(CUnsignedInt(d6.interfaceIndex)).get()
                    try await options.setIPv6MulticastHops(255).get()
                    try await options.setIPv6MulticastLoop(1).get()
                }
                v6 = channel
            } catch {
                logger.notice("mDNS over IPv6 unavailable on this interface; IPv4 only", metadata: ["error": "\(error)"])
            }
        }
        channels = [v4.channel] + (v6.map { [$0.channel] } ?? [])
        logger.info("mDNS listening", metadata: ["address": "\(device.address.map(String.init).joined(separator: "."))", "ipv6": "\(v6 != nil)"])
        try await v4.executeThenClose { inbound4, outbound4 in
            self.outbound4 = outbound4
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { for try await envelope in inbound4 { await self.received(envelope) } }
                if let v6 {
                    tasks.addTask {
                        try await v6.executeThenClose { inbound6, outbound6 in
                            await self.setOutbound6(outbound6)
                            for try await envelope in inbound6 { await self.received(envelope) }
                        }
                    }
                }
                tasks.addTask { try await self.startUp() }
                tasks.addTask { try await self.browse() }
                tasks.addTask { try await self.maintain() }
                do {
                    try await tasks.next()
                    while !Task.isCancelled { try await Task.sleep(for: .seconds(3600)) }
                } catch {}
                tasks.cancelAll()
            }
        }
        goodbye.disarm()
    }

    var channels: [any Channel] = []

    func setOutbound6(_ writer: NIOAsyncChannelOutboundWriter<AddressedEnvelope<ByteBuffer>>) { outbound6 = writer }

    func send(_ out: MDNSState.Outgoing) async throws {
        switch out {
        case .multicast(let m, let delay):
            if delay > 0 { try await Task.sleep(for: .milliseconds(delay)) }
            let bytes = DNSCodec.encode(m)
            try await outbound4?.write(AddressedEnvelope(remoteAddress: group4, data: ByteBuffer(bytes: bytes)))
            try? await outbound6?.write(AddressedEnvelope(remoteAddress: group6, data: ByteBuffer(bytes: bytes)))
        case .unicast(let m, let address, let port):
            let bytes = ByteBuffer(bytes: DNSCodec.encode(m))
            if address.count == 16 {
                var storage = sockaddr_in6()
                storage.sin6_family = sa_family_t(AF_INET6)
                storage.sin6_port = UInt16(port).bigEndian
                withUnsafeMutableBytes(of: &storage.sin6_addr) { raw in for i in 0..<16 { raw[i] = address[i] } }
                storage.sin6_scope_id = UInt32(device.ipv6Device?.interfaceIndex ?? 0)
                try await outbound6?.write(AddressedEnvelope(remoteAddress: SocketAddress(storage, host: ""), data: bytes))
            } else {
                let to = try SocketAddress(ipAddress: address.map(String.init).joined(separator: "."), port: port)
                try await outbound4?.write(AddressedEnvelope(remoteAddress: to, data: bytes))
            }
        }
    }

    /// Probing (three probes 250 ms apart, after a random 0-250 ms), then two announcements
    /// one second apart (RFC 6762 sections 8.1 and 8.3).
    func startUp() async throws {
        try await Task.sleep(for: .milliseconds(Int.random(in: 0...250)))
        var sent = 0
        while sent < 3 {
            try await send(.multicast(state.probe(), delayMilliseconds: 0))
            sent += 1
            try await Task.sleep(for: .milliseconds(250))
            if conflictSeen {
                conflictSeen = false
                state.renameAfterConflict()
                logger.notice("mDNS name in use; renamed", metadata: ["mdns.instance": "\(state.instanceName)"])
                sent = 0
            }
        }
        probing = false
        goodbye.arm(channels: zip(channels, [group4, group6]).map { ($0, $1) }, packet: DNSCodec.encode(state.goodbye()))
        for i in 0..<2 {
            try await send(.multicast(state.announcement(), delayMilliseconds: 0))
            if i == 0 { try await Task.sleep(for: .seconds(1)) }
        }
    }

    var conflictSeen = false

    /// PTR queries at 20-120 ms, then 1 s, doubling up to an hour (RFC 6762 section 5.2).
    func browse() async throws {
        try await Task.sleep(for: .milliseconds(Int.random(in: 20...120)))
        var interval = Duration.seconds(1)
        while !Task.isCancelled {
            try await send(.multicast(state.browseQuery(now: .now), delayMilliseconds: 0))
            try await Task.sleep(for: interval)
            interval = min(interval * 2, .seconds(3600))
        }
    }

    /// Expiry and refresh, four times a second.
    func maintain() async throws {
        while !Task.isCancelled {
            try await Task.sleep(for: .milliseconds(250))
            let (out, found) = state.tick(now: .now)
            report(found)
            for o in out { try await send(o) }
        }
    }

    func received(_ envelope: AddressedEnvelope<ByteBuffer>) async {
        guard envelope.data.readableBytes <= DNSMessage.maximumPacketSize,
              let message = try? DNSCodec.decode(Array(envelope.data.readableBytesView))
        else { return }
        let source: [UInt8]
        switch envelope.remoteAddress {
        case .v4(let v4): source = withUnsafeBytes(of: v4.address.sin_addr.s_addr) { Array($0) }
        case .v6(let v6): source = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
        default: return
        }
        let port = envelope.remoteAddress.port ?? 0
        if probing {
            if state.isConflict(message) { conflictSeen = true }
            if !message.isResponse { return }  // no answers before our name is ours
        }
        let (out, found) = state.receive(message, from: source, port: port, now: .now)
        report(found)
        for o in out { try? await send(o) }
    }

    func report(_ found: [DiscoveryEvent]) {
        for (name, why) in state.newlyIgnored where why != "it is this node" {
            logger.info("mDNS service seen, not a peer", metadata: ["mdns.instance": "\(name)", "reason": "\(why)"])
        }
        state.newlyIgnored.removeAll()
        for e in found {
            switch e {
            case .found(let p): logger.info("mDNS peer found", metadata: ["peer.address": "\(p)", "peer.id": "\(p.nodeID?.short ?? "?")"])
            case .lost(let p): logger.info("mDNS peer lost", metadata: ["peer.address": "\(p)", "peer.id": "\(p.nodeID?.short ?? "?")"])
            }
            events.yield(e)
        }
    }
}

/// Sends the goodbye of one interface (our records with TTL 0, RFC 6762 section 10.1) when the
/// discovery stops, so peers drop this node at once instead of waiting for the TTL. Armed once
/// the name is ours (after probing); fired synchronously from the stream's termination handler.
final class GoodbyeSender: @unchecked Sendable {
    private let lock = NSLock()
    private var targets: [(channel: any Channel, group: SocketAddress)] = []
    private var packet: [UInt8] = []

    func arm(channels: [(any Channel, SocketAddress)], packet: [UInt8]) {
        lock.withLock {
            targets = channels.map { (channel: $0.0, group: $0.1) }
            self.packet = packet
        }
    }

    func disarm() { lock.withLock { targets = [] } }

    func send() {
        let (targets, packet) = lock.withLock { (self.targets, self.packet) }
        for t in targets {
            // Wait (briefly) for the datagram to leave: the process may be about to exit.
            _ = try? t.channel.writeAndFlush(AddressedEnvelope(remoteAddress: t.group, data: ByteBuffer(bytes: packet))).wait()
        }
        disarm()
    }
}
