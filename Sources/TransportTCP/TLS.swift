import Crypto
import Foundation
import NIOCore
import NIOSSL
import NIOTLS
import SyncKit

/// TLS 1.3 for `TCPTransport`: both ends present a certificate (the node's identity), the peer's
/// node ID is the SHA-256 of the certificate it presented (never taken from a message), and a
/// value unique to the connection (the RFC 8446 section 7.5 exporter) lets the node bind a
/// cluster-key proof to it, so that a proof cannot be relayed into another connection.
public struct TLSSettings: Sendable {
    /// This node's certificate (DER) and private key (PEM): `NodeIdentity`.
    public var certificateDER: [UInt8]
    public var privateKeyPEM: String
    /// The application protocols offered (client) or accepted (server), in preference order:
    /// the protocol is chosen by ALPN, so one port can speak several.
    public var applicationProtocols: [String]
    /// A connection whose handshake has not finished by then is closed.
    public var handshakeTimeout: Duration

    public init(certificateDER: [UInt8], privateKeyPEM: String, applicationProtocols: [String] = [TLSSettings.syncKitProtocol],
                handshakeTimeout: Duration = .seconds(10)) {
        self.certificateDER = certificateDER
        self.privateKeyPEM = privateKeyPEM
        self.applicationProtocols = applicationProtocols
        self.handshakeTimeout = handshakeTimeout
    }

    /// The settings of a node's identity.
    public init(identity: NodeIdentity, applicationProtocols: [String] = [TLSSettings.syncKitProtocol]) {
        self.init(certificateDER: identity.certificateDER, privateKeyPEM: identity.privateKeyPEM, applicationProtocols: applicationProtocols)
    }

    /// SyncKit's own protocol, as named in ALPN.
    public static let syncKitProtocol = "synckit/\(WireMessage.protocolVersion)"

    /// The exporter label of the cluster-key binding (RFC 8446 section 7.5; RFC 5705 asks for
    /// an "EXPORTER-" prefix on labels that are not registered).
    static let exporterLabel = "EXPORTER-synckit-cluster-key"

    /// Signature algorithms accepted from a peer: BoringSSL's default list leaves Ed25519 out,
    /// and node certificates (ours, and Syncthing 2's) are Ed25519.
    static let verifySignatureAlgorithms: [SignatureAlgorithm] = [
        .ed25519, .ecdsaSecp256R1Sha256, .ecdsaSecp384R1Sha384, .ecdsaSecp521R1Sha512,
        .rsaPssRsaeSha256, .rsaPssRsaeSha384, .rsaPssRsaeSha512,
    ]

    /// A TLS configuration for one connection (one per connection: the key log that yields the
    /// exporter secret belongs to a context).
    func configuration(server: Bool, keyLog: KeyLog) throws -> TLSConfiguration {
        let chain: [NIOSSLCertificateSource] = [.certificate(try NIOSSLCertificate(bytes: certificateDER, format: .der))]
        let key = NIOSSLPrivateKeySource.privateKey(try NIOSSLPrivateKey(bytes: Array(privateKeyPEM.utf8), format: .pem))
        var c = server ? TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: key) : .makeClientConfiguration()
        if !server {
            c.certificateChain = chain
            c.privateKey = key
        }
        c.minimumTLSVersion = .tlsv13
        c.maximumTLSVersion = .tlsv13
        // Require the peer's certificate; `acceptSelfSigned` replaces the chain checks (identity
        // is the certificate's hash, checked by the node against its trust list).
        c.certificateVerification = .noHostnameVerification
        c.trustRoots = .certificates([])
        c.verifySignatureAlgorithms = Self.verifySignatureAlgorithms
        c.applicationProtocols = applicationProtocols
        c.keyLogCallback = keyLog.callback
        return c
    }
}

/// Accepts exactly one self-signed certificate from the peer (as Syncthing does); who it is
/// decides whether it is welcome, later.
@Sendable func acceptSelfSigned(_ certificates: [NIOSSLCertificate], _ promise: EventLoopPromise<NIOSSLVerificationResult>) {
    promise.succeed(certificates.count == 1 ? .certificateVerified : .failed)
}

/// Keeps the exporter secret BoringSSL logs for one connection (`EXPORTER_SECRET <client
/// random> <secret>`): swift-nio-ssl 2.37 has no API for keying material export (its issue
/// #593), and the key log is the one way to reach it. The other secrets are not kept.
final class KeyLog: Sendable {
    private let secret = Locked<[UInt8]?>(nil)

    var callback: NIOSSLKeyLogCallback {
        { [secret] line in
            let text = String(buffer: line)
            let parts = text.split(separator: " ")
            guard parts.count == 3, parts[0] == "EXPORTER_SECRET" else { return }
            let hex = Array(parts[2].trimmingCharacters(in: .whitespacesAndNewlines).utf8)
            var bytes = [UInt8]()
            var i = 0
            while i + 1 < hex.count, let b = UInt8(String(decoding: hex[i...i + 1], as: UTF8.self), radix: 16) {
                bytes.append(b)
                i += 2
            }
            secret.withLock { $0 = bytes }
        }
    }

    /// The connection's exporter value for `label` (32 bytes), once the handshake is done.
    func exporter(label: String) -> [UInt8]? {
        secret.withLock { $0 }.map { TLSExporter.export(secret: $0, label: label, context: [], length: 32) }
    }
}

/// RFC 8446 section 7.5: TLS-Exporter(label, context, length) =
/// HKDF-Expand-Label(Derive-Secret(exporter_secret, label, ""), "exporter", Hash(context), length),
/// with the cipher suite's hash (SHA-384 for a 48-byte secret, SHA-256 otherwise). Checked
/// against OpenSSL's `-keymatexport` and Go's `ExportKeyingMaterial`.
enum TLSExporter {
    static func export(secret: [UInt8], label: String, context: [UInt8], length: Int) -> [UInt8] {
        func run<H: HashFunction>(_ hash: H.Type) -> [UInt8] {
            let derived = expandLabel(H.self, secret: secret, label: label, context: Array(H.hash(data: [UInt8]())), length: H.Digest.byteCount)
            return expandLabel(H.self, secret: derived, label: "exporter", context: Array(H.hash(data: context)), length: length)
        }
        return secret.count == 48 ? run(SHA384.self) : run(SHA256.self)
    }

    /// RFC 8446 section 7.1 HKDF-Expand-Label.
    static func expandLabel<H: HashFunction>(_: H.Type, secret: [UInt8], label: String, context: [UInt8], length: Int) -> [UInt8] {
        let full = Array("tls13 \(label)".utf8)
        var info: [UInt8] = [UInt8(length >> 8), UInt8(length & 0xFF), UInt8(full.count)] + full
        info.append(UInt8(context.count))
        info += context
        return HKDF<H>.expand(pseudoRandomKey: SymmetricKey(data: secret), info: info, outputByteCount: length).withUnsafeBytes { Array($0) }
    }
}

/// Keeps the first error the pipeline saw: the ALPN handler reports a failed handshake as
/// "output closed", which would hide why.
final class FirstError: ChannelInboundHandler, Sendable {
    typealias InboundIn = Any
    private let first = Locked<(any Error)?>(nil)
    var error: (any Error)? { first.withLock { $0 } }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        first.withLock { if $0 == nil { $0 = error } }
        context.fireErrorCaught(error)
    }
}
