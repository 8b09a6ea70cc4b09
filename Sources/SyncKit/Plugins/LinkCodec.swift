/// Speaks another sync protocol on a link (Syncthing's BEP) by translating it to and from
/// SyncKit's messages, so that the one `NodeMachine` (sessions, index exchange, pulls,
/// conflicts) serves peers of both kinds: a second protocol, not a second engine.
///
/// The transport chooses the protocol per connection (TLS ALPN); the node asks
/// `SyncConfiguration.linkCodecs` for a codec when it is not SyncKit's own, and every frame of
/// that link goes through the codec instead of `WireCodec`.
///
/// What the machine sees of such a peer is a SyncKit peer that proved itself by its
/// certificate (the trust list), sent its index as records with whole block lists, and asks
/// for blocks by path, offset, size and hash. The codec keeps whatever the other protocol needs
/// beyond that (its handshake, its folder and device lists, its message numbering).
///
/// ## Implementation requirements
/// - `decode` and `encode` may be called concurrently (the receive loop and the writer); the
///   codec guards its own state.
/// - `decode` throws when the link must end (a protocol violation); the error's description is
///   the reason logged.
/// - Paths in records and block requests it produces are the other protocol's names as they
///   came (the machine judges every path with `PathSafety`, as for any peer).
public protocol LinkCodec: AnyObject, Sendable {
    /// The messages one frame from the peer stands for, in order (none: nothing the machine
    /// needs to hear, such as a keep-alive the codec answered itself).
    func decode(_ frame: Frame) throws -> [WireMessage]
    /// The frames that say `message` on this link (none: the other protocol has nothing for it,
    /// such as SyncKit's `auth`), and messages to hand back to the machine as if the peer had
    /// sent them (what the other protocol implies instead of saying, such as "you have all of
    /// my index" when nothing is left to send).
    func encode(_ message: WireMessage) throws -> (frames: [Frame], loopback: [WireMessage])
}

/// Makes a codec for a link whose application protocol is not SyncKit's (nil: refuse it).
public typealias LinkCodecs = @Sendable (PeerChannelSecurity) -> (any LinkCodec)?

/// Names of the protocols a link can speak.
public enum LinkProtocols {
    /// True for SyncKit's own protocol names (`synckit/N`).
    public static func isSyncKit(_ applicationProtocol: String) -> Bool { applicationProtocol.hasPrefix("synckit/") }
}
