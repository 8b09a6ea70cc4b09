import Foundation
import NIOCore
import SyncKit

/// A BEP link seen by the node as a SyncKit peer (`LinkCodec`): Syncthing's messages become
/// SyncKit's and back, around a `BEPSession` that checks the order and content of what the
/// Syncthing peer sends.
///
/// How the two handshakes and index exchanges line up:
///
/// | the node (SyncKit)                  | the Syncthing peer (BEP)                             |
/// |-------------------------------------|------------------------------------------------------|
/// | says its `hello` at once            | our Hello, at once (Syncthing's 20 s Hello deadline)  |
/// | hears `hello` + `auth` from the peer| when its ClusterConfig arrives: its device name, the  |
/// |                                     | index ID of its own index; the certificate proved it  |
/// |                                     | (the machine's trust list decides, as for any peer)   |
/// | hears an `indexRequest`             | the same ClusterConfig: the index ID and sequence it  |
/// |                                     | holds of ours (we send what is above, or everything)  |
/// | says its `indexRequest`             | our ClusterConfig: the index ID and sequence we hold  |
/// |                                     | of its index                                         |
/// | hears `indexUpdate`s, caught up     | its Index / IndexUpdates; caught up at the sequence   |
/// |   once all of the peer's index came |   its ClusterConfig announced (at once when we hold   |
/// |                                     |   that much already: then it sends nothing)           |
/// | says `indexUpdate`s                 | our Index (when it gets all of ours) or IndexUpdates, |
/// |                                     |   each file with its fixed-size block list            |
/// | `blockRequest` / `blockResponse`    | Request / Response (by name, offset, size and hash)   |
/// | `ping`, `close`                     | Ping, Close                                           |
///
/// `auth` has no BEP counterpart and is dropped: the TLS certificate is the proof.
public final class BEPLinkCodec: LinkCodec {
    /// What the codec needs to know besides what the node says.
    public struct Configuration: Sendable {
        public var me: NodeID
        /// The peer, as its certificate proved it.
        public var peer: NodeID
        public var folderID: String
        /// The folder's label in our ClusterConfig (what Syncthing shows when it offers the folder).
        public var folderLabel: String
        public var clientVersion: String

        public init(me: NodeID, peer: NodeID, folderID: String, folderLabel: String, clientVersion: String) {
            self.me = me
            self.peer = peer
            self.folderID = folderID
            self.folderLabel = folderLabel
            self.clientVersion = clientVersion
        }
    }

    private struct State {
        var session: BEPSession?
        /// Our own hello, as the node said it (name, cluster, index ID).
        var ourHello: WireMessage.Hello?
        var peerName = "?"
        /// Read off the peer's ClusterConfig (nil: it does not share our folder).
        var start: BEPClusterConfig.Start?
        var clusterConfigSeen = false
        /// The peer will get all of our index: the first update goes as an Index (which
        /// replaces what it holds of us), the rest as IndexUpdates.
        var sendFullIndex = true
        /// All of the peer's index has arrived.
        var caughtUp = false
    }

    public let configuration: Configuration
    private let state = Locked(State())

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// A codec per BEP link of a node syncing `folderID` (`SyncConfiguration.linkCodecs`).
    public static func factory(me: NodeID, folderID: String, folderLabel: String, clientVersion: String) -> LinkCodecs {
        { security in
            guard security.applicationProtocol == BEPFrames.applicationProtocol else { return nil }
            return BEPLinkCodec(configuration: .init(
                me: me, peer: security.peer, folderID: folderID, folderLabel: folderLabel, clientVersion: clientVersion))
        }
    }

    /// Why a link ends on our side.
    public struct Refused: Error, CustomStringConvertible {
        public var description: String
    }

    // MARK: from the peer

    public func decode(_ frame: Frame) throws -> [WireMessage] {
        let item: BEPStreamDecoder.Item
        do { item = try BEPFrames.item(frame) } catch { throw Refused(description: "undecodable BEP message: \(error)") }
        return try state.withLock { s -> [WireMessage] in
            guard var session = s.session else { throw Refused(description: "a BEP message before our Hello") }
            let ourIndexID = s.ourHello?.indexID ?? 0
            // Our sequence is the engine's; the codec does not know it. Claiming the most lets
            // the engine answer what the peer holds of ours (it sends what is above that).
            let outputs = session.receive(item, now: .zero) { (ourIndexID, Int64.max, 0) }
            s.session = session
            var out = [WireMessage]()
            for output in outputs {
                switch output {
                case .send, .sendHello:
                    break  // a Close on a refusal: the link ends below
                case .close(let reason):
                    if !out.isEmpty { return out + [.close(reason: reason)] }
                    throw Refused(description: reason)
                case .peerHello(let name, _):
                    s.peerName = name
                case .clusterConfig(let start):
                    guard !s.clusterConfigSeen else {
                        // A later ClusterConfig (the peer's folder settings changed): the
                        // exchange already runs.
                        continue
                    }
                    s.clusterConfigSeen = true
                    s.start = start
                    s.sendFullIndex = (start?.sendAfter ?? 0) == 0
                    guard let hello = s.ourHello else { throw Refused(description: "a ClusterConfig before our Hello") }
                    // The peer as a SyncKit peer: its certificate proved it (the machine's
                    // trust list decides); its index ID is its own folder index's.
                    out.append(.hello(.init(
                        nodeID: configuration.peer, nodeName: s.peerName, clusterName: hello.clusterName, listenPort: 0,
                        nonce: [UInt8](repeating: 0, count: 32), indexID: start?.peerIndexID ?? 0)))
                    out.append(.auth(.init(mac: [UInt8](repeating: 0, count: 32))))
                    // What it holds of ours: the engine sends what is above it.
                    out.append(.indexRequest(.init(indexID: ourIndexID, since: UInt64(start?.sendAfter ?? 0))))
                case .index(let records, _, let lastSequence):
                    if let start = s.start, lastSequence >= start.peerMaxSequence { s.caughtUp = true }
                    out.append(.indexUpdate(.init(indexID: s.start?.peerIndexID ?? 0, records: records, caughtUp: s.caughtUp)))
                case .request(let request):
                    guard request.folder == configuration.folderID, request.hash.count == 32 else {
                        throw Refused(description: "a request for folder \(request.folder.debugDescription) or without a block hash")
                    }
                    out.append(.blockRequest(.init(
                        id: UInt32(bitPattern: request.id), hash: BlockHash(digest: request.hash), size: UInt32(request.size),
                        path: request.name, offset: UInt64(request.offset))))
                case .response(let response):
                    out.append(.blockResponse(.init(
                        id: UInt32(bitPattern: response.id), status: response.code == .noError ? .ok : .notFound,
                        data: ByteBuffer(bytes: response.data))))
                }
            }
            if case .message(.ping) = item { out.append(.ping) }
            return out
        }
    }

    // MARK: to the peer

    public func encode(_ message: WireMessage) throws -> (frames: [Frame], loopback: [WireMessage]) {
        try state.withLock { s -> ([Frame], [WireMessage]) in
            switch message {
            case .hello(let hello):
                s.ourHello = hello
                var session = BEPSession(
                    configuration: .init(me: configuration.me, deviceName: hello.nodeName, clientVersion: configuration.clientVersion, folderID: configuration.folderID),
                    peer: configuration.peer, now: .zero)
                var frames = [Frame]()
                for case .sendHello(let h) in session.start(now: .zero) { frames.append(try BEPFrames.frame(hello: h)) }
                s.session = session
                return (frames, [])
            case .auth:
                return ([], [])
            case .indexRequest(let request):
                let hello = s.ourHello
                let config = BEPClusterConfig.make(folderID: configuration.folderID, label: configuration.folderLabel, devices: [
                    // Our own sequence is not announced (Syncthing does not act on it; it
                    // sends what is above the sequence it holds of ours).
                    .init(id: configuration.me, name: hello?.nodeName ?? "", indexID: hello?.indexID ?? 0, maxSequence: 0),
                    .init(id: configuration.peer, name: s.peerName, indexID: request.indexID, maxSequence: Int64(clamping: request.since)),
                ])
                var back = [WireMessage]()
                // Nothing will come when the peer does not share the folder, or when we hold
                // its index up to what it announced (it sends what is above our claim).
                if let start = s.start {
                    if request.indexID == start.peerIndexID && start.peerIndexID != 0 && Int64(clamping: request.since) >= start.peerMaxSequence {
                        s.caughtUp = true
                    }
                } else {
                    s.caughtUp = true
                }
                if s.caughtUp { back.append(.indexUpdate(.init(indexID: s.start?.peerIndexID ?? 0, records: [], caughtUp: true))) }
                return ([try BEPFrames.frame(.clusterConfig(config))], back)
            case .indexUpdate(let update):
                var files = [Bep_FileInfo]()
                files.reserveCapacity(update.records.count)
                for r in update.records {
                    // A file hashed by a node that does not speak BEP has no Syncthing block
                    // list: it cannot be announced here (the BEP peer gets it from a node that
                    // has the list).
                    guard let blocks = Self.blockInfos(r) else { continue }
                    files.append(SyncthingFiles.fileInfo(from: r, blocks: blocks, sequence: Int64(clamping: r.sequence)))
                }
                let full = s.sendFullIndex
                guard !files.isEmpty || full else { return ([], []) }
                s.sendFullIndex = false
                if full {
                    var index = Bep_Index()
                    index.folder = configuration.folderID
                    index.files = files
                    return ([try BEPFrames.frame(.index(index))], [])
                }
                var index = Bep_IndexUpdate()
                index.folder = configuration.folderID
                index.files = files
                return ([try BEPFrames.frame(.indexUpdate(index))], [])
            case .blockRequest(let request):
                var r = Bep_Request()
                r.id = Int32(bitPattern: request.id)
                r.folder = configuration.folderID
                r.name = request.path
                r.offset = Int64(clamping: request.offset)
                r.size = Int32(clamping: request.size)
                r.hash = Data(request.hash.digestBytes)
                return ([try BEPFrames.frame(.request(r))], [])
            case .blockResponse(let response):
                // The block goes into the frame once (`BEPFrames.responseFrame`).
                let ok = response.status == .ok
                return ([BEPFrames.responseFrame(id: Int32(bitPattern: response.id), data: ok ? response.data : ByteBuffer(), code: ok ? .noError : .noSuchFile)], [])
            case .ping:
                return ([try BEPFrames.frame(.ping)], [])
            case .close(let reason):
                var close = Bep_Close()
                close.reason = reason
                return ([try BEPFrames.frame(.close(close))], [])
            }
        }
    }

    /// A record's Syncthing block list, with offsets; an empty file is one block of size 0
    /// (Syncthing drops a link that announces a file without blocks); nil when unknown.
    static func blockInfos(_ r: FileRecord) -> [Bep_BlockInfo]? {
        guard r.kind == .file, !r.deleted else { return [] }
        guard let blocks = r.syncthingBlocks else { return nil }
        if blocks.isEmpty {
            var empty = Bep_BlockInfo()
            empty.hash = Data(Chunker.hash(UnsafeRawBufferPointer(start: nil, count: 0)).digestBytes)
            return [empty]
        }
        var out = [Bep_BlockInfo]()
        out.reserveCapacity(blocks.count)
        var offset: Int64 = 0
        for b in blocks {
            var info = Bep_BlockInfo()
            info.offset = offset
            info.size = Int32(b.size)
            info.hash = Data(b.hash.digestBytes)
            out.append(info)
            offset += Int64(b.size)
        }
        return out
    }
}

extension BlockHash {
    /// The 32 digest bytes, big-endian (the inverse of `init(digest:)`).
    public var digestBytes: [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(32)
        for w in [w0, w1, w2, w3] {
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: w >> UInt64(shift))) }
        }
        return out
    }
}
