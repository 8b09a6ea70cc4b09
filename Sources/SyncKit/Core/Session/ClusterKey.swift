import Crypto
import Foundation

/// The shared secret of a cluster, and the proof that a peer holds it.
///
/// Over TLS (the default), each side sends
/// `auth = HMAC-SHA256(K, "synckit-auth-v2" | sender ID | receiver ID | exporter)`, where the
/// exporter is a value both ends derive from this TLS connection's handshake (RFC 8446 section
/// 7.5) and that nobody else can know: a proof made for one connection is worthless in any
/// other, so a man in the middle who holds a certificate but not the key cannot relay a real
/// node's proof. The IDs are the certificates' hashes, proven by TLS.
///
/// Over plain TCP (`--insecure-plaintext`) each side sends a fresh 32-byte nonce in `hello`, then
/// `auth = HMAC-SHA256(K, "synckit-auth-v1" | sender ID | receiver ID | receiver nonce | sender nonce)`:
/// the receiver's fresh nonce defeats replay and binding both IDs a reflected proof; but without
/// TLS nothing proves an ID, and the traffic is in clear.
///
/// K is derived from the cluster secret with HKDF-SHA256 (RFC 5869) and never crosses the wire.
/// Without a secret (open mode) K is derived from a fixed public string: the proof then proves
/// nothing, and a node accepts an unknown peer only because `--open` told it to.
public struct ClusterKey: Sendable, Equatable {
    let keyBytes: [UInt8]
    /// True when no secret was given.
    public let isOpen: Bool

    /// A key from a secret (the contents of `--cluster-key-file` or `SYNCKIT_CLUSTER_KEY`).
    public init(secret: String) {
        self.init(material: Array(secret.trimmingCharacters(in: .whitespacesAndNewlines).utf8), isOpen: false)
    }

    /// No key: anyone who speaks the protocol and names the same cluster may join.
    public static let open = ClusterKey(material: Array("synckit-open-mode".utf8), isOpen: true)

    init(material: [UInt8], isOpen: Bool) {
        let key = HKDF<SHA256>.deriveKey(
            inputKeyMaterial: SymmetricKey(data: material), info: Array("synckit cluster key v1".utf8), outputByteCount: 32)
        keyBytes = key.withUnsafeBytes { Array($0) }
        self.isOpen = isOpen
    }

    /// The proof `sender` sends to `receiver` on a TLS connection whose exporter is `binding`.
    public func proof(sender: NodeID, receiver: NodeID, binding: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: Self.bound(sender: sender, receiver: receiver, binding: binding), using: SymmetricKey(data: keyBytes)))
    }

    /// Checks a proof received from `sender` on a TLS connection, in constant time.
    public func verify(_ mac: [UInt8], sender: NodeID, receiver: NodeID, binding: [UInt8]) -> Bool {
        HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: Self.bound(sender: sender, receiver: receiver, binding: binding), using: SymmetricKey(data: keyBytes))
    }

    static func bound(sender: NodeID, receiver: NodeID, binding: [UInt8]) -> [UInt8] {
        Array("synckit-auth-v2".utf8) + sender.bytes + receiver.bytes + binding
    }

    /// The MAC `sender` sends to `receiver` (plain TCP).
    public func proof(sender: NodeID, receiver: NodeID, receiverNonce: [UInt8], senderNonce: [UInt8]) -> [UInt8] {
        let data = Self.authenticated(sender: sender, receiver: receiver, receiverNonce: receiverNonce, senderNonce: senderNonce)
        return Array(HMAC<SHA256>.authenticationCode(for: data, using: SymmetricKey(data: keyBytes)))
    }

    /// Checks a MAC received from `sender`, in constant time.
    public func verify(_ mac: [UInt8], sender: NodeID, receiver: NodeID, receiverNonce: [UInt8], senderNonce: [UInt8]) -> Bool {
        let data = Self.authenticated(sender: sender, receiver: receiver, receiverNonce: receiverNonce, senderNonce: senderNonce)
        return HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: data, using: SymmetricKey(data: keyBytes))
    }

    /// The bytes a MAC covers: "synckit-auth-v1" | sender ID | receiver ID | receiver's nonce |
    /// sender's nonce.
    static func authenticated(sender: NodeID, receiver: NodeID, receiverNonce: [UInt8], senderNonce: [UInt8]) -> [UInt8] {
        Array("synckit-auth-v1".utf8) + sender.bytes + receiver.bytes + receiverNonce + senderNonce
    }

    /// A fresh random nonce.
    public static func nonce() -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        return (0..<32).map { _ in UInt8.random(in: 0...255, using: &g) }
    }
}
