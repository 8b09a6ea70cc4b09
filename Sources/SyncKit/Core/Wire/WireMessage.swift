import NIOCore

/// The messages of the SyncKit protocol (version 4; see ARCHITECTURE.md, "Wire protocol").
///
/// The exchange between two nodes:
/// 1. Both send `hello` (identity, cluster, a fresh random nonce).
/// 2. Both send `auth`: HMAC-SHA256 under the cluster key over both nonces and both IDs, so each
///    side proves it holds the key without revealing it (see `Handshake`).
/// 3. Both send `indexRequest`: "I hold your index `indexID` up to sequence `since`"; the other
///    answers with `indexUpdate`s of the records after it, then keeps sending new ones.
/// 4. `blockRequest` / `blockResponse` move content; many requests are in flight at once.
/// 5. `ping` keeps an idle link known alive; `close` says why a side leaves.
public enum WireMessage: Sendable, Equatable {
    case hello(Hello)
    case auth(Auth)
    case indexRequest(IndexRequest)
    case indexUpdate(IndexUpdate)
    case blockRequest(BlockRequest)
    case blockResponse(BlockResponse)
    case ping
    case close(reason: String)

    /// Type bytes on the wire; never reuse a retired value.
    public enum Kind: UInt8, Sendable {
        case hello = 1, auth = 2, indexRequest = 3, indexUpdate = 4
        case blockRequest = 5, blockResponse = 6, ping = 7, close = 8
        /// An `indexUpdate` whose payload is compressed (`LZ4Block`: 4-byte length, one LZ4
        /// block); decodes to `.indexUpdate`. The codec picks it when it saves a tenth or more.
        case indexUpdateLZ4 = 9
    }

    public static let magic: UInt32 = 0x5359_4E4B  // "SYNK"
    /// 6: index updates may come compressed (`Kind.indexUpdateLZ4`).
    public static let protocolVersion: UInt16 = 6

    public struct Hello: Sendable, Equatable {
        public var protocolVersion: UInt16
        public var nodeID: NodeID
        public var nodeName: String
        public var clusterName: String
        /// The port the sender accepts connections on (0 if it does not listen).
        public var listenPort: UInt16
        /// 32 random bytes the other side must include in its `auth` MAC.
        public var nonce: [UInt8]
        /// Identifies the sender's index database; a new one means "forget my sequences".
        public var indexID: UInt64

        public init(protocolVersion: UInt16 = WireMessage.protocolVersion, nodeID: NodeID, nodeName: String, clusterName: String, listenPort: UInt16, nonce: [UInt8], indexID: UInt64) {
            self.protocolVersion = protocolVersion
            self.nodeID = nodeID
            self.nodeName = nodeName
            self.clusterName = clusterName
            self.listenPort = listenPort
            self.nonce = nonce
            self.indexID = indexID
        }
    }

    public struct Auth: Sendable, Equatable {
        public var mac: [UInt8]
        public init(mac: [UInt8]) { self.mac = mac }
    }

    public struct IndexRequest: Sendable, Equatable {
        /// The index of the receiver that the sender holds records of (0: none).
        public var indexID: UInt64
        /// The highest sequence of that index the sender holds.
        public var since: UInt64
        public init(indexID: UInt64, since: UInt64) {
            self.indexID = indexID
            self.since = since
        }
    }

    public struct IndexUpdate: Sendable, Equatable {
        /// The sender's index the records belong to.
        public var indexID: UInt64
        /// Records in ascending sequence order.
        public var records: [FileRecord]
        /// True on the batch that completes the answer to an `indexRequest`.
        public var caughtUp: Bool
        /// Records sent as a delta, by position in `records`: such a record's `blocks` hold
        /// only the middle of its block list; the rest comes from the last block list sent for
        /// the same path on this connection (see `BlockDelta`).
        public var deltas: [Int: BlockDelta]
        /// Records the decoder could not take (a path that is not valid UTF-8): the receiver
        /// refuses them one by one, with a log line and an event. Never encoded.
        public var refused: [RefusedRecord]
        public init(indexID: UInt64, records: [FileRecord], caughtUp: Bool, deltas: [Int: BlockDelta] = [:], refused: [RefusedRecord] = []) {
            self.indexID = indexID
            self.records = records
            self.caughtUp = caughtUp
            self.deltas = deltas
            self.refused = refused
        }
    }

    /// A record of an update that was refused while decoding: its path, made printable, and why.
    public struct RefusedRecord: Sendable, Equatable {
        public var path: String
        public var reason: String
        public init(path: String, reason: String) {
            self.path = path
            self.reason = reason
        }
    }

    /// A block list given as a change to an earlier one (the base): keep the first
    /// `keepPrefix` and the last `keepSuffix` blocks of the base and put the sent blocks between.
    ///
    /// Why: a 512 MiB file has about 8,000 blocks, so its record is 300 KB; an edit in the middle
    /// changes a handful of them, and sending the whole list again to every peer cost more than
    /// the changed data itself. Both ends of a connection keep, per path, the last list each
    /// sent and the last each received on it (files of at least `minimumBlocks` blocks only);
    /// either may serve as the base, named by its `digest`, so the receiver never guesses which
    /// (records cross on the wire). A new connection starts with none.
    public struct BlockDelta: Sendable, Equatable {
        public var keepPrefix: UInt32
        public var keepSuffix: UInt32
        /// `digest(of:)` of the base list.
        public var baseDigest: UInt64
        public init(keepPrefix: UInt32, keepSuffix: UInt32, baseDigest: UInt64 = 0) {
            self.keepPrefix = keepPrefix
            self.keepSuffix = keepSuffix
            self.baseDigest = baseDigest
        }

        /// Names a block list: the first 8 bytes of the SHA-256 of its hashes and sizes.
        public static func digest(of blocks: [BlockRef]) -> UInt64 {
            var bytes = ByteBuffer()
            bytes.reserveCapacity(blocks.count * 36)
            for b in blocks {
                bytes.writeMultipleIntegers(b.hash.w0, b.hash.w1, b.hash.w2, b.hash.w3, b.size)
            }
            return bytes.withUnsafeReadableBytes { Chunker.hash($0) }.w0
        }

        /// Files with fewer blocks are always sent in full.
        public static let minimumBlocks = 64

        /// The delta from `base` to `blocks`, and the middle blocks to send (nil when nothing
        /// is shared at either end).
        public static func between(_ base: [BlockRef], _ blocks: [BlockRef]) -> (BlockDelta, [BlockRef])? {
            let limit = min(base.count, blocks.count)
            var prefix = 0
            while prefix < limit && base[prefix] == blocks[prefix] { prefix += 1 }
            var suffix = 0
            while suffix < limit - prefix && base[base.count - 1 - suffix] == blocks[blocks.count - 1 - suffix] { suffix += 1 }
            guard prefix + suffix > 0 else { return nil }
            return (BlockDelta(keepPrefix: UInt32(prefix), keepSuffix: UInt32(suffix)), Array(blocks[prefix..<(blocks.count - suffix)]))
        }

        /// The full list from `base` and the middle; nil when `base` is too short for it.
        public func apply(to base: [BlockRef], middle: [BlockRef]) -> [BlockRef]? {
            let (p, q) = (Int(keepPrefix), Int(keepSuffix))
            guard p + q <= base.count else { return nil }
            return Array(base[..<p]) + middle + Array(base[(base.count - q)...])
        }
    }

    public struct BlockRequest: Sendable, Equatable {
        public var id: UInt32
        public var hash: BlockHash
        public var size: UInt32
        /// Where the requester believes the block is: a hint, checked by the server.
        public var path: String
        public var offset: UInt64
        public init(id: UInt32, hash: BlockHash, size: UInt32, path: String, offset: UInt64) {
            self.id = id
            self.hash = hash
            self.size = size
            self.path = path
            self.offset = offset
        }
    }

    public struct BlockResponse: Sendable, Equatable {
        public enum Status: UInt8, Sendable { case ok = 0, notFound = 1, error = 2 }
        public var id: UInt32
        public var status: Status
        public var data: ByteBuffer
        public init(id: UInt32, status: Status, data: ByteBuffer) {
            self.id = id
            self.status = status
            self.data = data
        }
    }
}
