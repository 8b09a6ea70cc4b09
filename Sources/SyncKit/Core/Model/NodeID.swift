import Crypto
import Foundation

/// The identity of one node: the SHA-256 digest of its TLS certificate (DER), as Syncthing's
/// device IDs are.
///
/// It is stored as four big-endian words so that hashing and comparison (used to break ties
/// deterministically on every node) are cheap. Its text form is Syncthing's (lib/protocol
/// deviceid.go): the 32 bytes in unpadded RFC 4648 base32 (52 characters), cut into four
/// groups of 13, each followed by a Luhn mod 32 check character, written as eight groups of
/// seven joined by dashes: `MFZWI3D-BONSGYC-...`. An ID can be pasted between syncctl and
/// Syncthing, and a typo is caught by the check characters. The first seven characters make
/// the short form used in logs and conflict-copy names.
public struct NodeID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64

    /// Builds an ID from exactly 32 bytes (a SHA-256 digest).
    public init<Bytes: Collection>(bytes: Bytes) where Bytes.Element == UInt8 {
        precondition(bytes.count == 32, "a NodeID is 32 bytes")
        var words = [UInt64](repeating: 0, count: 4)
        for (i, b) in bytes.enumerated() { words[i / 8] = words[i / 8] << 8 | UInt64(b) }
        (w0, w1, w2, w3) = (words[0], words[1], words[2], words[3])
    }

    /// A node known only by its short ID (Syncthing's `ShortID`: the first 8 bytes of the ID,
    /// big-endian), the rest zero: how version vectors name nodes (see `VersionVector`).
    public init(shortID: UInt64) {
        (w0, w1, w2, w3) = (shortID, 0, 0, 0)
    }

    /// This node as version vectors key it: its short form.
    public var versionKey: NodeID { NodeID(shortID: w0) }

    /// The ID of the holder of a certificate: the SHA-256 of its DER encoding.
    public init(certificateDER: [UInt8]) {
        self.init(bytes: Array(SHA256.hash(data: certificateDER)))
    }

    /// Parses an ID as Syncthing does: case, dashes and spaces do not matter, the look-alikes
    /// 0, 1 and 8 read as O, I and B, and the 56-character form's check characters must hold
    /// (the 52-character form without them is accepted too). Nil when it is not an ID.
    public init?(_ text: String) {
        var chars = Array(text.uppercased().utf8).filter { $0 != UInt8(ascii: "-") && $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "=") }
        for i in chars.indices {
            switch chars[i] {
            case UInt8(ascii: "0"): chars[i] = UInt8(ascii: "O")
            case UInt8(ascii: "1"): chars[i] = UInt8(ascii: "I")
            case UInt8(ascii: "8"): chars[i] = UInt8(ascii: "B")
            default: break
            }
        }
        if chars.count == 56 {
            var plain = [UInt8]()
            for group in 0..<4 {
                let body = Array(chars[(group * 14)..<(group * 14 + 13)])
                guard let check = Luhn32.check(body), check == chars[group * 14 + 13] else { return nil }
                plain += body
            }
            chars = plain
        }
        guard chars.count == 52, let bytes = Base32.decode(String(decoding: chars, as: UTF8.self)), bytes.count == 32 else { return nil }
        self.init(bytes: bytes)
    }

    /// The 32 raw bytes, big-endian.
    public var bytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(32)
        for w in [w0, w1, w2, w3] { for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: w >> UInt64(s))) } }
        return out
    }

    /// The Syncthing form: eight dash-separated groups of seven (see the type's note).
    public var description: String {
        let plain = Array(Base32.encode(bytes).utf8)
        var withChecks = [UInt8]()
        for group in 0..<4 {
            let body = Array(plain[(group * 13)..<(group * 13 + 13)])
            withChecks += body + [Luhn32.check(body)!]
        }
        var out = [UInt8]()
        for (i, c) in withChecks.enumerated() {
            if i > 0 && i % 7 == 0 { out.append(UInt8(ascii: "-")) }
            out.append(c)
        }
        return String(decoding: out, as: UTF8.self)
    }
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

/// Syncthing's check character for a group of base32 characters (lib/protocol/luhn.go): from
/// the left, each character's value times a factor that alternates 1, 2, 1, ..., folded to base
/// 32 (quotient plus remainder), summed; the check is what brings the sum to a multiple of 32.
/// (Not the textbook Luhn order, which runs from the right: Syncthing's, so IDs match.)
enum Luhn32 {
    /// The check character of `body` (nil when a character is not base32).
    static func check(_ body: [UInt8]) -> UInt8? {
        var factor = 1
        var sum = 0
        for c in body {
            guard let value = Base32.alphabet.firstIndex(of: c) else { return nil }
            var addend = factor * value
            factor = factor == 2 ? 1 : 2
            addend = addend / 32 + addend % 32
            sum += addend
        }
        return Base32.alphabet[(32 - sum % 32) % 32]
    }
}
