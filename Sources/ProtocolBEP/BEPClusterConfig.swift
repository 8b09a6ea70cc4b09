import Foundation
import SyncKit

/// The ClusterConfig exchange, as Syncthing 1.x and 2.x do it (lib/model: `generateClusterConfig`,
/// `ClusterConfig`, `newIndexHandler`): what this node announces for its folder, and what a
/// peer's announcement means for the index exchange that follows.
///
/// Each side lists, per shared folder, every device it shares the folder with, and for each the
/// index ID and highest sequence it holds of that device's index (its own included). An index ID
/// names one history of a device's sequence numbers: a device that loses or resets its index
/// takes a new one, so a sequence number is only meaningful beside the index ID it belongs to.
/// From the peer's entry for us we learn whether it can take our index from where it left off
/// (same index ID, a sequence we have reached) or needs all of it; from its entry for itself,
/// whether what we hold of its index still belongs to the index it will send.
public enum BEPClusterConfig {
    /// One device of the folder as announced.
    public struct Device: Sendable, Equatable {
        public var id: NodeID
        public var name: String
        /// Where to dial it (`dynamic` for discovery, or `tcp://host:port`).
        public var addresses: [String]
        /// The index of this device's files that the announcer holds: its index ID (0 for none)
        /// and the highest sequence in it.
        public var indexID: UInt64
        public var maxSequence: Int64

        public init(id: NodeID, name: String, addresses: [String] = ["dynamic"], indexID: UInt64 = 0, maxSequence: Int64 = 0) {
            self.id = id
            self.name = name
            self.addresses = addresses
            self.indexID = indexID
            self.maxSequence = maxSequence
        }
    }

    /// Our ClusterConfig for one folder shared with `devices` (us among them, with our own index
    /// ID and sequence). `paused` announces a folder that is not ready (its first scan is not
    /// done): as Syncthing does, so that the peer does not act on index information that is not
    /// there yet; a second ClusterConfig follows when it is.
    public static func make(folderID: String, label: String, devices: [Device], paused: Bool = false) -> Bep_ClusterConfig {
        var folder = Bep_Folder()
        folder.id = folderID
        folder.label = label
        folder.stopReason = paused ? 1 : 0
        folder.devices = devices.map { d in
            var device = Bep_Device()
            device.id = Data(d.id.bytes)
            device.name = d.name
            device.addresses = d.addresses
            device.compression = .metadata
            device.indexID = d.indexID
            device.maxSequence = d.maxSequence
            return device
        }
        var config = Bep_ClusterConfig()
        config.folders = [folder]
        return config
    }

    /// How the index exchange of one folder starts, read off the peer's ClusterConfig.
    public struct Start: Sendable, Equatable {
        /// Send our index entries with a sequence above this (0: the whole index).
        public var sendAfter: Int64
        /// Drop what we hold of the peer's index before taking what it sends: it announces an
        /// index ID other than the one we hold (it reset its index) or none at all.
        public var dropPeerIndex: Bool
        /// The index ID to keep for the peer's entries from now on (0: it announces none).
        public var peerIndexID: UInt64
        /// The highest sequence the peer says it has of its own index.
        public var peerMaxSequence: Int64
        /// The peer has the folder but is not running it (paused, or not started yet).
        public var peerPaused: Bool
    }

    /// Why a ClusterConfig is refused (the connection then ends, as Syncthing ends it).
    public enum Refusal: Error, Equatable, CustomStringConvertible {
        /// A folder without an entry for the sender itself, or for us.
        case missingDevice(folder: String, which: String)
        /// A device ID that is not 32 bytes.
        case badDeviceID(folder: String)
        /// The folder is listed twice.
        case duplicateFolder(String)

        public var description: String {
            switch self {
            case .missingDevice(let folder, let which): "the cluster config lists folder \(folder) without \(which)"
            case .badDeviceID(let folder): "the cluster config lists a malformed device ID in folder \(folder)"
            case .duplicateFolder(let folder): "the cluster config lists folder \(folder) twice"
            }
        }
    }

    /// Reads the peer's ClusterConfig for `folderID`: nil when the peer does not share that
    /// folder with us (yet: it may once its user accepts it; nothing is exchanged until then).
    ///
    /// - `me`, `peer`: the two ends (the peer's ID is the one its certificate proved).
    /// - `ourIndexID`, `ourSequence`: our index as it is now.
    /// - `heldPeerIndexID`: the index ID of the peer's entries we hold (0: none).
    ///
    /// As Syncthing, every folder listed must name both the sender and us, or the whole message
    /// is refused; a peer that claims more of our index than we have (we lost index data and
    /// kept the ID, or it is confused) gets the whole index again.
    public static func start(
        from config: Bep_ClusterConfig, folderID: String, me: NodeID, peer: NodeID,
        ourIndexID: UInt64, ourSequence: Int64, heldPeerIndexID: UInt64
    ) throws(Refusal) -> Start? {
        var seen = Set<String>()
        var result: Start?
        for folder in config.folders {
            guard seen.insert(folder.id).inserted else { throw .duplicateFolder(folder.id) }
            var local: Bep_Device?
            var remote: Bep_Device?
            for device in folder.devices {
                guard device.id.count == 32 else { throw .badDeviceID(folder: folder.id) }
                let id = NodeID(bytes: device.id)
                if id == me { local = device } else if id == peer { remote = device }
            }
            guard let remote else { throw .missingDevice(folder: folder.id, which: "the sender") }
            guard let local else { throw .missingDevice(folder: folder.id, which: "us") }
            guard folder.id == folderID else { continue }

            // What it holds of ours.
            let sendAfter: Int64
            if local.indexID == ourIndexID && ourIndexID != 0 {
                sendAfter = local.maxSequence > ourSequence || local.maxSequence < 0 ? 0 : local.maxSequence
            } else {
                sendAfter = 0
            }
            // What we hold of its own.
            let drop = remote.indexID == 0 || remote.indexID != heldPeerIndexID
            result = Start(sendAfter: sendAfter, dropPeerIndex: drop, peerIndexID: remote.indexID,
                           peerMaxSequence: remote.maxSequence, peerPaused: folder.stopReason != 0)
        }
        return result
    }
}
