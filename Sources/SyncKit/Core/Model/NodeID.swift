import Crypto
import Foundation

/// The identity of one node: the SHA-256 digest of its public key.
///
/// It is stored as four big-endian words so that hashing and comparison (used to break ties
/// deterministically on every node) are cheap; its text form is unpadded RFC 4648 base32, as
/// Syncthing's device IDs are, and the first seven characters make the short form used in logs
/// and conflict-copy names.
public struct NodeID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64

    /// Builds an ID from exactly 32 bytes (a SHA-256 digest).
    public init<Bytes: Collection>(bytes: Bytes) where Bytes.Element == UInt8 {
        precondition(bytes.count == 32, "a NodeID is 32 bytes")
        var words = [UInt64](repeating: 0, count: 4)
        for (i, b) in bytes.enumerated() { words[i / 8] = words[i / 8] << 8 | UInt64(b) }
        (w0, w1, w2, w3) = (words[0], words[1], words[2], words[3])
    }

    /// The ID of the holder of `publicKey` (its raw representation is hashed).
    public init(publicKey: Data) {
        self.init(bytes: Array(SHA256.hash(data: publicKey)))
    }

    /// Parses the base32 text form; nil when it is not 52 valid characters.
    public init?(_ text: String) {
        guard let bytes = Base32.decode(text), bytes.count == 32 else { return nil }
        self.init(bytes: bytes)
    }

    /// The 32 raw bytes, big-endian.
    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(32)
        for w in [w0, w1, w2, w3] { for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: w >> UInt64(s))) } }
        return out
    }

    public var description: String { Base32.encode(bytes) }
    /// Seven characters: enough to tell the nodes of a LAN apart in logs and file names.
    public var short: String { String(description.prefix(7)) }

    public static func < (a: NodeID, b: NodeID) -> Bool {
        (a.w0, a.w1, a.w2, a.w3) < (b.w0, b.w1, b.w2, b.w3)
    }
}

/// Unpadded base32 (RFC 4648 section 6 alphabet), upper case, as used for node IDs.
enum Base32 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        var buffer: UInt32 = 0
        var bits = 0
        for b in bytes {
            buffer = buffer << 8 | UInt32(b)
            bits += 8
            while bits >= 5 {
                out.append(alphabet[Int((buffer >> UInt32(bits - 5)) & 31)])
                bits -= 5
            }
        }
        if bits > 0 { out.append(alphabet[Int((buffer << UInt32(5 - bits)) & 31)]) }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ text: String) -> [UInt8]? {
        var out = [UInt8]()
        var buffer: UInt32 = 0
        var bits = 0
        for c in text.uppercased().utf8 {
            guard let v = alphabet.firstIndex(of: c) else { return nil }
            buffer = buffer << 5 | UInt32(v)
            bits += 5
            if bits >= 8 {
                out.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits - 8)))
                bits -= 8
            }
        }
        return out
    }
}
