import Crypto
import Foundation
import SwiftASN1
import X509

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
        identity = try NodeIdentity.loadOrCreate(in: stateDir)
        index = try IndexStore(path: indexPath)
        if !FileManager.default.fileExists(atPath: marker) {
            FileManager.default.createFile(atPath: marker, contents: Data("This folder is synced by SyncKit. Do not delete this file.\n".utf8))
        }
        self.folder = folder
    }
}

/// A node's identity: a private key and the self-signed certificate of its public key, kept in
/// the state directory (`cert.pem`, and `key.pem` with mode 0600). The node ID is the SHA-256 of
/// the certificate's DER encoding, as Syncthing's device IDs are: TLS proves, in every
/// connection, that the peer holds the key behind the ID it shows (issue 14).
///
/// The key is Ed25519; the certificate names "syncthing" (common name and DNS name) and is valid
/// for 20 years, as Syncthing's own are, so that a Syncthing device accepts it. A node that ran
/// before certificates (only `identity.key`, an Ed25519 key) keeps its key: a certificate is
/// made for it, and its ID, now the certificate's hash, changes once (its peers' trust lists
/// name the new one; no data is lost: versions made under the old ID stay valid).
public struct NodeIdentity: Sendable {
    /// The certificate, DER.
    public let certificateDER: [UInt8]
    /// The private key, PKCS#8 PEM.
    public let privateKeyPEM: String
    public let id: NodeID

    public init(certificateDER: [UInt8], privateKeyPEM: String) {
        self.certificateDER = certificateDER
        self.privateKeyPEM = privateKeyPEM
        id = NodeID(certificateDER: certificateDER)
    }

    /// Loads the identity in `directory`, or makes and stores one when there is none.
    public static func loadOrCreate(in directory: String) throws -> NodeIdentity {
        let certPath = directory + "/cert.pem", keyPath = directory + "/key.pem"
        if let certPEM = try? String(contentsOfFile: certPath, encoding: .utf8), let keyPEM = try? String(contentsOfFile: keyPath, encoding: .utf8) {
            do {
                let certificate = try Certificate(pemEncoded: certPEM)
                _ = try Certificate.PrivateKey(pemEncoded: keyPEM)
                var serializer = DER.Serializer()
                try serializer.serialize(certificate)
                return NodeIdentity(certificateDER: serializer.serializedBytes, privateKeyPEM: keyPEM)
            } catch {
                throw SyncError(.configuration, "the identity in \(directory) (cert.pem, key.pem) is damaged; move both away to make a new one", underlying: error)
            }
        }
        // Before certificates, the key alone was kept here: keep it.
        var key = Curve25519.Signing.PrivateKey()
        if let raw = try? Data(contentsOf: URL(fileURLWithPath: directory + "/identity.key")), let old = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw) {
            key = old
        }
        let identity = try make(key: key)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: keyPath, contents: Data(identity.privateKeyPEM.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw SyncError(.io, "cannot write the private key at \(keyPath)")
        }
        let certPEM = try Certificate(derEncoded: identity.certificateDER).serializeAsPEM().pemString
        guard FileManager.default.createFile(atPath: certPath, contents: Data((certPEM + "\n").utf8), attributes: [.posixPermissions: 0o644]) else {
            throw SyncError(.io, "cannot write the certificate at \(certPath)")
        }
        return identity
    }

    /// A new self-signed certificate for `key`.
    public static func make(key: Curve25519.Signing.PrivateKey = .init()) throws -> NodeIdentity {
        let privateKey = Certificate.PrivateKey(key)
        let name = try DistinguishedName {
            CommonName("syncthing")
            OrganizationName("SyncKit")
        }
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: privateKey.publicKey,
            notValidBefore: now.addingTimeInterval(-86_400), notValidAfter: now.addingTimeInterval(20 * 365 * 86_400),
            issuer: name, subject: name, signatureAlgorithm: .ed25519,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                SubjectAlternativeNames([.dnsName("syncthing")])
            },
            issuerPrivateKey: privateKey)
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return NodeIdentity(certificateDER: serializer.serializedBytes, privateKeyPEM: try privateKey.serializeAsPEM().pemString)
    }
}
