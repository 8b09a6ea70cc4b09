/// The error type SyncKit throws across its public API.
///
/// Following swift-nio and swift-log practice, errors are a struct with an open-ended `Code`
/// rather than a frozen enum: new codes can be added without breaking callers that switch on
/// them, and every error carries a sentence meant for the person reading it plus the
/// underlying error, if any.
public struct SyncError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, in a form code can branch on.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let raw: String
        init(_ raw: String) { self.raw = raw }
        public var description: String { raw }

        /// A file-system call failed (errno is in the message).
        public static let io = Code("io")
        /// The folder exists but its `.synckit` marker is missing while an index is present:
        /// most likely an unmounted disk. Syncing it would read as "everything was deleted".
        public static let folderMarkerMissing = Code("folderMarkerMissing")
        /// The folder does not exist or is not a directory.
        public static let folderMissing = Code("folderMissing")
        /// The index database could not be opened or written.
        public static let index = Code("index")
        /// A peer sent bytes that do not decode: it loses its connection.
        public static let protocolViolation = Code("protocolViolation")
        /// A path from a peer was refused (absolute, `..`, NUL, state dir ...).
        public static let unsafePath = Code("unsafePath")
        /// A connection or transport failed.
        public static let transport = Code("transport")
        /// Invalid configuration given by the user.
        public static let configuration = Code("configuration")
        /// What was asked for is not there (a file, a conflict copy, a version).
        public static let notFound = Code("notFound")
        /// What was asked for contradicts the state it would act on (it would lose the last
        /// copy of something, or the thing changed meanwhile).
        public static let stateConflict = Code("stateConflict")
    }

    public var code: Code
    public var message: String
    public var underlying: (any Error)?

    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String {
        if let underlying { return "\(message) (\(underlying))" }
        return message
    }
}
