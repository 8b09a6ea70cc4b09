import Crypto
import Foundation

/// The folder's state directory, opened: what a node needs before its first scan.
///
/// It checks the folder (a directory this user may write), refuses an index without the
/// folder's marker (an unmounted disk would otherwise read as "every file was deleted"), makes
/// the state and marker directories, loads or makes the node's identity, and opens the index.
struct StateDirectory {
    let folder: String
    let identity: NodeIdentity
    let index: IndexStore

    /// Opens the state of `config.folder`. Throws `SyncError` with `.folderMissing` when the
    /// folder is not a writable directory, and `.folderMarkerMissing` when an index exists but
    /// the folder's marker does not.
    init(_ config: SyncConfiguration) throws {
        let folder = config.folder
        guard let st = try FileOps.lstat(folder), st.kind == .directory else {
            throw SyncError(.folderMissing, "the folder \(folder) does not exist or is not a directory")
        }
        guard access(folder, W_OK) == 0 else {
            throw SyncError(.folderMissing, "the folder \(folder) is not writable by this user")
        }
        let stateDir = config.resolvedStateDirectory
        let markerDir = folder + "/" + PathSafety.stateDirectory
        let marker = markerDir + "/folder-marker"
        let indexPath = stateDir + "/index.db"
        if FileManager.default.fileExists(atPath: indexPath) && !FileManager.default.fileExists(atPath: marker) {
            throw SyncError(.folderMarkerMissing, "\(folder) has no \(PathSafety.stateDirectory)/folder-marker but an index exists at \(indexPath): is the disk mounted? Refusing to sync, which would delete every file on the other nodes. If the folder is really empty now, remove \(indexPath) to start over.")
        }
        try FileManager.default.createDirectory(atPath: stateDir, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: markerDir, withIntermediateDirectories: true)
        identity = try NodeIdentity.loadOrCreate(at: URL(fileURLWithPath: stateDir + "/identity.key"))
        index = try IndexStore(path: indexPath)
        if !FileManager.default.fileExists(atPath: marker) {
            FileManager.default.createFile(atPath: marker, contents: Data("This folder is synced by SyncKit. Do not delete this file.\n".utf8))
        }
        self.folder = folder
    }
}

/// The persistent key pair of a node, kept in the folder's state directory.
///
/// The key is made on first start and never changes, so a node keeps its ID across restarts
/// (peers use it to resume the index exchange where it stopped). The private key is written
/// with mode 0600. Today only its public half is used (to derive the ID); it is the anchor for
/// the TLS and signed-announcement work that comes later.
public struct NodeIdentity: Sendable {
    /// The raw Curve25519 signing key (kept as bytes: the key type is not `Sendable`).
    public let privateKeyBytes: Data
    public let id: NodeID

    public init(privateKey: Curve25519.Signing.PrivateKey) {
        privateKeyBytes = privateKey.rawRepresentation
        id = NodeID(publicKey: privateKey.publicKey.rawRepresentation)
    }

    /// Loads the key at `url`, or makes and stores a new one when there is none.
    public static func loadOrCreate(at url: URL) throws -> NodeIdentity {
        if let data = try? Data(contentsOf: url) {
            do {
                return NodeIdentity(privateKey: try .init(rawRepresentation: data))
            } catch {
                throw SyncError(.configuration, "the identity key at \(url.path) is damaged; move it away to make a new one", underlying: error)
            }
        }
        let key = Curve25519.Signing.PrivateKey()
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: url.path, contents: key.rawRepresentation, attributes: [.posixPermissions: 0o600]) else {
            throw SyncError(.io, "cannot write the identity key at \(url.path)")
        }
        return NodeIdentity(privateKey: key)
    }
}
