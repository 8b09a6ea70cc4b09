import NIOCore

/// Encodes `WireMessage`s into frames and decodes them back, checking every length.
///
/// Decoding treats the input as hostile: every count is checked against the bytes that remain
/// before anything is allocated for it (so "4 billion records" in a 20-byte frame fails at once
/// instead of reserving memory), strings must be valid UTF-8 within fixed limits, enum values
/// must be known, and a frame must be consumed exactly. Any violation throws `WireError`.
public enum WireCodec {
    /// Longest path or name accepted, in bytes (Linux's PATH_MAX).
    public static let maxStringBytes = 4096
    /// Most counters a version vector may carry: one per node that ever edited the file.
    public static let maxVersionEntries = 1024

    // MARK: encoding

    public static func encode(_ message: WireMessage, allocator: ByteBufferAllocator = .init()) -> Frame {
        var b = allocator.buffer(capacity: 64)
        let kind: WireMessage.Kind
        switch message {
        case .hello(let h):
            kind = .hello
            b.writeInteger(WireMessage.magic)
            b.writeInteger(h.protocolVersion)
            writeNodeID(h.nodeID, to: &b)
            writeString(h.nodeName, to: &b)
            writeString(h.clusterName, to: &b)
            b.writeInteger(h.listenPort)
            b.writeInteger(UInt8(h.nonce.count))
            b.writeBytes(h.nonce)
            b.writeInteger(h.indexID)
        case .auth(let a):
            kind = .auth
            b.writeInteger(UInt8(a.mac.count))
            b.writeBytes(a.mac)
        case .indexRequest(let r):
            kind = .indexRequest
            b.writeInteger(r.indexID)
            b.writeInteger(r.since)
        case .indexUpdate(let u):
            kind = .indexUpdate
            b.reserveCapacity(16 + u.records.reduce(0) { $0 + 96 + $1.path.utf8.count + $1.blocks.count * 36 })
            b.writeInteger(u.indexID)
            b.writeInteger(UInt8(u.caughtUp ? 1 : 0))
            b.writeInteger(UInt32(u.records.count))
            for (i, r) in u.records.enumerated() {
                // Form: 0 a full record, 1 a delta (kept prefix and suffix, then the record
                // with the middle blocks only).
                if let d = u.deltas[i] {
                    b.writeInteger(UInt8(1))
                    b.writeInteger(d.keepPrefix)
                    b.writeInteger(d.keepSuffix)
                    b.writeInteger(d.baseDigest)
                } else {
                    b.writeInteger(UInt8(0))
                }
                writeRecord(r, to: &b)
                writeFixedBlocks(r, to: &b)
            }
        case .blockRequest(let r):
            kind = .blockRequest
            b.writeInteger(r.id)
            writeHash(r.hash, to: &b)
            b.writeInteger(r.size)
            writeString(r.path, to: &b)
            b.writeInteger(r.offset)
        case .blockResponse(let r):
            kind = .blockResponse
            b.writeInteger(r.id)
            b.writeInteger(r.status.rawValue)
            b.writeInteger(UInt32(r.data.readableBytes))
            var data = r.data
            b.writeBuffer(&data)
        case .ping:
            kind = .ping
        case .close(let reason):
            kind = .close
            writeString(String(reason.utf8.prefix(1024)) ?? "", to: &b)
        }
        if kind == .indexUpdate, let packed = compressed(b) {
            return Frame(type: WireMessage.Kind.indexUpdateLZ4.rawValue, payload: packed)
        }
        return Frame(type: kind.rawValue, payload: b)
    }

    /// Index updates smaller than this go as they are: too little to gain.
    static let compressionThreshold = 256

    /// The index update's payload compressed, when that saves at least a tenth. Records repeat
    /// much that compresses well: the node IDs of `modifiedBy` and of every version counter
    /// (32 bytes each), path prefixes, and fixed-width sizes, times and sequences whose high
    /// bytes are zero. A moved directory's records shrink to about a fifth (measured in
    /// `WireCodecTests`); block hashes do not compress, so a batch of large files gains little
    /// and is sent as it is.
    static func compressed(_ payload: ByteBuffer) -> ByteBuffer? {
        guard payload.readableBytes >= compressionThreshold,
              let packed = payload.withUnsafeReadableBytes({ LZ4Block.compress($0) }),
              packed.count <= payload.readableBytes - payload.readableBytes / 10 else { return nil }
        return ByteBuffer(bytes: packed)
    }

    static func writeNodeID(_ id: NodeID, to b: inout ByteBuffer) {
        b.writeInteger(id.w0)
        b.writeInteger(id.w1)
        b.writeInteger(id.w2)
        b.writeInteger(id.w3)
    }

    static func writeHash(_ h: BlockHash, to b: inout ByteBuffer) {
        b.writeInteger(h.w0)
        b.writeInteger(h.w1)
        b.writeInteger(h.w2)
        b.writeInteger(h.w3)
    }

    static func writeString(_ s: String, to b: inout ByteBuffer) {
        let bytes = s.utf8
        b.writeInteger(UInt16(min(bytes.count, Int(UInt16.max))))
        b.writeBytes(bytes.prefix(Int(UInt16.max)))
    }

    /// Checks a block list rebuilt from a delta the way `readRecord` checks a full one.
    public static func checkBlocks(of r: FileRecord) throws {
        let total = r.blocks.reduce(UInt64(0)) { $0 + UInt64($1.size) }
        guard r.kind == .file, !r.deleted, total == r.size else {
            throw WireError(.malformed, "a delta record whose blocks add up to \(total) bytes but the file has \(r.size)")
        }
    }

    /// A record's wire form; `inode` is local and not sent. Also the index store's format.
    /// The fewest bytes a record of an index update can take, its form byte included: form 1,
    /// path length 2 (empty path), kind 1, deleted 1, size 8, mtime 8, mode 4, modifiedBy 32,
    /// version count 2 (no entries), block count 4 (no blocks), link target length 2, sequence 8.
    /// It bounds a declared record count before anything is allocated; it must not be larger
    /// than what `writeRecord` can produce (the fuzzer found 80, which refused a re-encoded
    /// update of one such record).
    /// (77 with the count of the fixed-size block list that follows a record in an update.)
    static let minimumRecordSize = 77

    public static func writeRecord(_ r: FileRecord, to b: inout ByteBuffer) {
        writeString(r.path, to: &b)
        b.writeInteger(r.kind.rawValue)
        b.writeInteger(UInt8(r.deleted ? 1 : 0))
        b.writeInteger(r.size)
        b.writeInteger(r.mtimeNs)
        b.writeInteger(r.mode)
        writeNodeID(r.modifiedBy, to: &b)
        b.writeInteger(UInt16(r.version.entries.count))
        for entry in r.version.entries {  // sorted by node
            writeNodeID(entry.node, to: &b)
            b.writeInteger(entry.value)
        }
        b.writeInteger(UInt32(r.blocks.count))
        for block in r.blocks {
            writeHash(block.hash, to: &b)
            b.writeInteger(block.size)
        }
        writeString(r.symlinkTarget, to: &b)
        b.writeInteger(r.sequence)
    }

    // MARK: decoding

    public static func decode(_ frame: Frame) throws -> WireMessage {
        guard let kind = WireMessage.Kind(rawValue: frame.type) else {
            throw WireError(.unknownType, "unknown message type \(frame.type)")
        }
        var r = Reader(frame.payload)
        let message: WireMessage
        switch kind {
        case .hello:
            guard try r.integer(UInt32.self) == WireMessage.magic else { throw WireError(.malformed, "bad magic: not a SyncKit peer") }
            let version = try r.integer(UInt16.self)
            guard version == WireMessage.protocolVersion else {
                throw WireError(.unsupportedVersion, "peer speaks protocol version \(version), this node speaks \(WireMessage.protocolVersion)")
            }
            let id = try r.nodeID()
            let name = try r.string()
            let cluster = try r.string()
            let port = try r.integer(UInt16.self)
            let nonceCount = Int(try r.integer(UInt8.self))
            guard nonceCount == 32 else { throw WireError(.malformed, "nonce of \(nonceCount) bytes") }
            let nonce = try r.bytes(nonceCount)
            let indexID = try r.integer(UInt64.self)
            message = .hello(.init(protocolVersion: version, nodeID: id, nodeName: name, clusterName: cluster, listenPort: port, nonce: nonce, indexID: indexID))
        case .auth:
            let count = Int(try r.integer(UInt8.self))
            guard count == 32 else { throw WireError(.malformed, "MAC of \(count) bytes") }
            message = .auth(.init(mac: try r.bytes(count)))
        case .indexRequest:
            message = .indexRequest(.init(indexID: try r.integer(UInt64.self), since: try r.integer(UInt64.self)))
        case .indexUpdate:
            let indexID = try r.integer(UInt64.self)
            let caughtUp = try r.bool()
            // A count above remaining / (smallest record) cannot be true.
            let count = try r.count(UInt32.self, minimumElementSize: minimumRecordSize)
            var records = [FileRecord]()
            var deltas = [Int: WireMessage.BlockDelta]()
            records.reserveCapacity(count)
            var refused = [WireMessage.RefusedRecord]()
            for _ in 0..<count {
                do {
                    switch try r.integer(UInt8.self) {
                    case 0:
                        var record = try readRecord(&r)
                        try readFixedBlocks(&r, into: &record)
                        records.append(record)
                    case 1:
                        let delta = WireMessage.BlockDelta(keepPrefix: try r.integer(UInt32.self), keepSuffix: try r.integer(UInt32.self), baseDigest: try r.integer(UInt64.self))
                        var record = try readRecord(&r, partialBlocks: true)
                        try readFixedBlocks(&r, into: &record)
                        records.append(record)
                        deltas[records.count - 1] = delta
                    default:
                        throw WireError(.malformed, "unknown record form")
                    }
                } catch let bad as InvalidPathRecord {
                    // Refused on its own; the rest of the update still counts (its fixed-size
                    // block list, which follows, is read past).
                    var ignored = FileRecord(path: "", kind: .file, size: bad.size, modifiedBy: NodeID(bytes: [UInt8](repeating: 0, count: 32)))
                    ignored.deleted = bad.deleted
                    try readFixedBlocks(&r, into: &ignored)
                    refused.append(.init(path: bad.description, reason: "not valid UTF-8"))
                }
            }
            message = .indexUpdate(.init(indexID: indexID, records: records, caughtUp: caughtUp, deltas: deltas, refused: refused))
        case .indexUpdateLZ4:
            // Inflated within the frame limit (checked before allocating), then decoded as
            // any index update, with all of its checks.
            let inflated: [UInt8]
            do {
                inflated = try frame.payload.withUnsafeReadableBytes { raw in
                    try LZ4Block.decompress(raw, limit: Frame.defaultMaximumSize)
                }
            } catch LZ4Block.Failure.tooLarge(let announced) {
                throw WireError(.frameTooLarge, "a compressed index update announcing \(announced) bytes")
            } catch {
                throw WireError(.malformed, "a compressed index update that is not a valid LZ4 block of its announced length")
            }
            return try decode(Frame(type: WireMessage.Kind.indexUpdate.rawValue, payload: ByteBuffer(bytes: inflated)))
        case .blockRequest:
            message = .blockRequest(.init(id: try r.integer(UInt32.self), hash: try r.hash(), size: try r.integer(UInt32.self), path: try r.string(), offset: try r.integer(UInt64.self)))
        case .blockResponse:
            let id = try r.integer(UInt32.self)
            guard let status = WireMessage.BlockResponse.Status(rawValue: try r.integer(UInt8.self)) else {
                throw WireError(.malformed, "unknown block response status")
            }
            let length = try r.count(UInt32.self, minimumElementSize: 1)
            message = .blockResponse(.init(id: id, status: status, data: try r.slice(length)))
        case .ping:
            message = .ping
        case .close:
            message = .close(reason: try r.string())
        }
        guard r.buffer.readableBytes == 0 else {
            throw WireError(.malformed, "\(r.buffer.readableBytes) unexpected bytes after a \(kind) message")
        }
        return message
    }

    /// Reads one record in wire form (also used by the index store). With `partialBlocks`
    /// (the middle of a delta) the blocks need not add up to the size; the caller checks the
    /// full list once it has rebuilt it (`checkBlocks`).
    ///
    /// A path that is not valid UTF-8 does not make the frame malformed: the record is read to
    /// its end and `InvalidPathRecord` is thrown, so that an index update can refuse that one
    /// record (and say so) and go on with the others.
    public static func readRecord(_ r: inout Reader, partialBlocks: Bool = false) throws -> FileRecord {
        let pathBytes = try r.stringBytes()
        let path = String(validating: pathBytes, as: UTF8.self)
        guard let kind = FileRecord.Kind(rawValue: try r.integer(UInt8.self)) else { throw WireError(.malformed, "unknown file kind") }
        let deleted = try r.bool()
        let size = try r.integer(UInt64.self)
        let mtime = try r.integer(Int64.self)
        let mode = try r.integer(UInt32.self)
        let modifiedBy = try r.nodeID()
        let versionCount = try r.count(UInt16.self, minimumElementSize: 40)
        guard versionCount <= maxVersionEntries else { throw WireError(.frameTooLarge, "version vector of \(versionCount) entries") }
        var counters = [NodeID: UInt64](minimumCapacity: versionCount)
        for _ in 0..<versionCount {
            let node = try r.nodeID()
            counters[node] = try r.integer(UInt64.self)
        }
        let blockCount = try r.count(UInt32.self, minimumElementSize: 36)
        var blocks = [BlockRef]()
        blocks.reserveCapacity(blockCount)
        var total: UInt64 = 0
        for _ in 0..<blockCount {
            let block = BlockRef(hash: try r.hash(), size: try r.integer(UInt32.self))
            guard block.size > 0 else { throw WireError(.malformed, "a block of size 0") }
            // No chunker cut makes a longer block, and Syncthing's blocks (which a file pulled
            // from a BEP peer has as its chunks) are 16 MiB at most; a larger one could only
            // overrun buffers.
            guard block.size <= UInt32(max(Chunker.standard.maxSize, FixedBlocks.maxBlockSize)) else { throw WireError(.malformed, "a block of \(block.size) bytes is over the maximum block size") }
            total += UInt64(block.size)
            blocks.append(block)
        }
        if kind == .file && !deleted && total != size && !partialBlocks {
            throw WireError(.malformed, "blocks add up to \(total) bytes but the file has \(size)")
        }
        if (kind != .file || deleted) && (size != 0 || blockCount != 0) {
            throw WireError(.malformed, "a directory, symlink or deletion with a size or blocks")
        }
        let target = try r.string()
        let sequence = try r.integer(UInt64.self)
        guard let path else { throw InvalidPathRecord(bytes: pathBytes, size: size, deleted: deleted || kind != .file) }
        return FileRecord(path: path, kind: kind, size: size, mtimeNs: mtime, mode: mode & 0o777, deleted: deleted, version: VersionVector(counters), modifiedBy: modifiedBy, blocks: blocks, symlinkTarget: target, sequence: sequence)
    }

    /// A record's fixed-size block list (`FileRecord.fixedBlocks`), after the record in an index
    /// update and in the index store: a count, then hash and size of each block.
    public static func writeFixedBlocks(_ r: FileRecord, to b: inout ByteBuffer) {
        b.writeInteger(UInt32(r.fixedBlocks.count))
        for block in r.fixedBlocks {
            writeHash(block.hash, to: &b)
            b.writeInteger(block.size)
        }
    }

    /// Reads what `writeFixedBlocks` wrote into `record`, checking it as a peer's block list is
    /// checked: it must be Syncthing's shape for the record's size, or nothing.
    public static func readFixedBlocks(_ r: inout Reader, into record: inout FileRecord) throws {
        let count = try r.count(UInt32.self, minimumElementSize: 36)
        guard count > 0 else { return }
        var blocks = [BlockRef]()
        blocks.reserveCapacity(count)
        for _ in 0..<count { blocks.append(BlockRef(hash: try r.hash(), size: try r.integer(UInt32.self))) }
        guard record.kind == .file, !record.deleted, FixedBlocks.isFixedShape(blocks, size: record.size) else {
            throw WireError(.malformed, "a fixed-size block list that does not describe the file")
        }
        record.fixedBlocks = blocks
    }

    /// A bounds-checked cursor over a payload: every read throws `WireError` instead of trapping.
    public struct Reader {
        var buffer: ByteBuffer
        public init(_ buffer: ByteBuffer) { self.buffer = buffer }
        public var remaining: Int { buffer.readableBytes }

        mutating func integer<T: FixedWidthInteger>(_: T.Type) throws -> T {
            guard let v = buffer.readInteger(as: T.self) else { throw WireError(.truncated, "expected \(T.self)") }
            return v
        }

        mutating func bool() throws -> Bool {
            switch try integer(UInt8.self) {
            case 0: return false
            case 1: return true
            default: throw WireError(.malformed, "a flag that is neither 0 nor 1")
            }
        }

        /// Reads a count and rejects it unless `count * minimumElementSize` bytes remain.
        mutating func count<T: FixedWidthInteger>(_: T.Type, minimumElementSize: Int) throws -> Int {
            let n = Int(try integer(T.self))
            guard n <= buffer.readableBytes / max(minimumElementSize, 1) else {
                throw WireError(.frameTooLarge, "a count of \(n) does not fit in the \(buffer.readableBytes) bytes left")
            }
            return n
        }

        mutating func bytes(_ n: Int) throws -> [UInt8] {
            guard let b = buffer.readBytes(length: n) else { throw WireError(.truncated, "expected \(n) bytes") }
            return b
        }

        mutating func slice(_ n: Int) throws -> ByteBuffer {
            guard let b = buffer.readSlice(length: n) else { throw WireError(.truncated, "expected \(n) bytes") }
            return b
        }

        /// A length-prefixed string's bytes, not yet checked as UTF-8.
        mutating func stringBytes() throws -> [UInt8] {
            let n = Int(try integer(UInt16.self))
            guard n <= WireCodec.maxStringBytes else { throw WireError(.frameTooLarge, "a string of \(n) bytes") }
            guard let bytes = buffer.readBytes(length: n) else { throw WireError(.truncated, "expected a string of \(n) bytes") }
            return bytes
        }

        mutating func string() throws -> String {
            let n = Int(try integer(UInt16.self))
            guard n <= WireCodec.maxStringBytes else { throw WireError(.frameTooLarge, "a string of \(n) bytes") }
            guard let view = buffer.readSlice(length: n) else { throw WireError(.truncated, "expected a string of \(n) bytes") }
            guard let s = view.getString(at: view.readerIndex, length: n), s.utf8.count == n,
                  String(validating: view.readableBytesView, as: UTF8.self) != nil
            else { throw WireError(.malformed, "a string that is not valid UTF-8") }
            return s
        }

        mutating func nodeID() throws -> NodeID {
            guard let bytes = buffer.readBytes(length: 32) else { throw WireError(.truncated, "expected a node ID") }
            return NodeID(bytes: bytes)
        }

        mutating func hash() throws -> BlockHash {
            BlockHash(w0: try integer(UInt64.self), w1: try integer(UInt64.self), w2: try integer(UInt64.self), w3: try integer(UInt64.self))
        }
    }
}

/// A record whose path is not valid UTF-8 (read to its end, so decoding can go on).
public struct InvalidPathRecord: Error, CustomStringConvertible {
    public var bytes: [UInt8]
    /// What the rest of the update needs to read past the record's fixed-size block list.
    public var size: UInt64 = 0
    public var deleted = false
    /// The path with every byte that is not printable ASCII as `\xNN`.
    public var description: String {
        bytes.map { $0 >= 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\\") ? String(UnicodeScalar($0)) : "\\x" + String($0, radix: 16).leftPadded(to: 2) }.joined()
    }
}
