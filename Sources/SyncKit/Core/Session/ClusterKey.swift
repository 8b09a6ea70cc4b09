import Crypto
import Foundation

/// The shared secret of a cluster, and the challenge-response that proves a peer holds it.
///
/// Each side sends a fresh 32-byte nonce in `hello`, then
/// `auth = HMAC-SHA256(K, "synckit-auth-v1" | sender ID | receiver ID | receiver nonce | sender nonce)`,
/// where K is derived from the cluster secret with HKDF-SHA256 (RFC 5869). The receiver's own
/// fresh nonce makes a recorded `auth` useless for replay, binding both IDs stops a reflected
/// one, and the key never crosses the wire. A node without a key runs in open mode: K is
/// derived from a fixed public string, so open nodes accept each other and refuse keyed ones.
/// This is membership, not secrecy: traffic is not yet encrypted (TLS comes later).
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

    /// The MAC `sender` sends to `receiver`.
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
