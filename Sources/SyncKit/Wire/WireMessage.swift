import NIOCore

/// The messages of the SyncKit protocol (version 1).
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
    }

    public static let magic: UInt32 = 0x5359_4E4B  // "SYNK"
    public static let protocolVersion: UInt16 = 1

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
        public init(indexID: UInt64, records: [FileRecord], caughtUp: Bool) {
            self.indexID = indexID
            self.records = records
            self.caughtUp = caughtUp
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
