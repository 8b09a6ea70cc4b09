import SyncKit

/// One setting in which `DiscoveryConformance` exercises a `PeerDiscovery`: the discovery under
/// test, what it announces, what it must find, and anything that must run beside it.
///
/// The kit asks for a fresh scenario for each check (an event stream is consumed once).
public struct DiscoveryScenario: Sendable {
    /// Another node that runs (announces) for the duration of a check, so that the subject has
    /// someone to find: for mechanisms where peers announce themselves (mDNS, the in-memory bus).
    public struct Companion: Sendable {
        /// The companion's discovery; its event stream is consumed and discarded during a check.
        public var discovery: any PeerDiscovery
        /// What the companion announces.
        public var announcement: LocalAnnouncement

        /// Creates a companion.
        public init(discovery: any PeerDiscovery, announcement: LocalAnnouncement) {
            self.discovery = discovery
            self.announcement = announcement
        }
    }

    /// The discovery under test.
    public var subject: any PeerDiscovery
    /// What the subject announces (its own node).
    public var announcement: LocalAnnouncement
    /// Endpoints the subject must report as `.found` within the deadline. Matched on host and
    /// port, and on node ID when the expected endpoint has one.
    public var expectedPeers: [PeerEndpoint]
    /// Endpoints under which the subject's own node could be reported and must not be (for
    /// example its own address in a static list). Events carrying its node ID are always checked.
    public var selfEndpoints: [PeerEndpoint]
    /// Nodes that run beside the subject during each check.
    public var companions: [Companion]
    /// Tells whether everything the subject started for its stream has stopped (tasks ended,
    /// registrations removed), when the implementation can be observed that way. The kit polls
    /// it after terminating the stream; nil skips that part of the check.
    public var isStopped: (@Sendable () async -> Bool)?

    /// Creates a scenario; see the properties for what each means.
    public init(
        subject: any PeerDiscovery,
        announcement: LocalAnnouncement,
        expectedPeers: [PeerEndpoint],
        selfEndpoints: [PeerEndpoint] = [],
        companions: [Companion] = [],
        isStopped: (@Sendable () async -> Bool)? = nil
    ) {
        self.subject = subject
        self.announcement = announcement
        self.expectedPeers = expectedPeers
        self.selfEndpoints = selfEndpoints
        self.companions = companions
        self.isStopped = isStopped
    }
}

/// The conformance kit for `PeerDiscovery`: checks the requirements the protocol documents
/// against a real implementation, in scenarios the implementation's tests describe.
///
/// ```swift
/// try await DiscoveryConformance(makeScenario: {
///     let bus = InMemoryDiscoveryBus()
///     ...
///     return DiscoveryScenario(subject: bus.discovery(), announcement: me, expectedPeers: [...], companions: [...])
/// }).run()
/// ```
///
/// Checks: `events(announcing:)` returns at once and every expected peer is found within the
/// deadline; the node itself is never reported; terminating the stream (cancelling the task
/// that consumes it) ends it and stops the implementation's work. Failures throw
/// `ConformanceFailure`.
public struct DiscoveryConformance: Sendable {
    private let makeScenario: @Sendable () async throws -> DiscoveryScenario
    private let deadline: Duration
    private let quietPeriod: Duration

    /// Creates the kit.
    /// - Parameters:
    ///   - deadline: how long finding the expected peers, or stopping, may take.
    ///   - quietPeriod: how long to keep listening after everything was found, to catch a late
    ///     report of the node itself.
    ///   - makeScenario: makes a fresh scenario; called once per check.
    public init(
        deadline: Duration = .seconds(10),
        quietPeriod: Duration = .milliseconds(300),
        makeScenario: @escaping @Sendable () async throws -> DiscoveryScenario
    ) {
        self.deadline = deadline
        self.quietPeriod = quietPeriod
        self.makeScenario = makeScenario
    }

    /// Runs every check, stopping at the first failure.
    public func run() async throws {
        try await checkFindsExpectedPeersAndNeverItself()
        try await checkStopsWhenTerminated()
    }

    /// `events(announcing:)` returns promptly; every expected peer is reported `.found` within
    /// the deadline; no event (until a quiet period after that) reports the node itself.
    public func checkFindsExpectedPeersAndNeverItself() async throws {
        let check = "findsExpectedPeersAndNeverItself"
        let scenario = try await makeScenario()
        try await withCompanions(scenario) {
            let clock = ContinuousClock()
            let start = clock.now
            let stream = scenario.subject.events(announcing: scenario.announcement)
            if clock.now - start > .seconds(1) {
                throw ConformanceFailure(check: check, "events(announcing:) blocked for \(clock.now - start); it must return at once")
            }
            // One task consumes the stream (an AsyncStream is iterated by one task, and
            // cancelling that task would terminate it); the check polls what it collected.
            let events = Locked<(all: [DiscoveryEvent], finished: Bool)>(([], false))
            let consumer = Task {
                for await event in stream { events.withLock { $0.all.append(event) } }
                events.withLock { $0.finished = true }
            }
            defer { consumer.cancel() }
            var allFoundAt: ContinuousClock.Instant?
            var missing = scenario.expectedPeers
            while true {
                let (seen, finished) = events.withLock { ($0.all, $0.finished) }
                for case .found(let endpoint) in seen {
                    try Self.rejectSelf(endpoint, scenario: scenario, check: check)
                    missing.removeAll { Self.matches(endpoint, expected: $0) }
                }
                if missing.isEmpty {
                    if allFoundAt == nil { allFoundAt = clock.now }
                    if let allFoundAt, clock.now - allFoundAt >= quietPeriod { return }
                } else if finished {
                    throw ConformanceFailure(check: check, "the stream finished before \(missing) were found")
                } else if clock.now - start > deadline {
                    throw ConformanceFailure(check: check, "within \(deadline), these peers were not found: \(missing); events were \(seen)")
                }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    /// Cancelling the task that consumes the stream ends the iteration promptly, without a
    /// crash; afterwards `isStopped` (when the scenario has it) turns true within the deadline.
    public func checkStopsWhenTerminated() async throws {
        let check = "stopsWhenTerminated"
        let scenario = try await makeScenario()
        try await withCompanions(scenario) {
            let stream = scenario.subject.events(announcing: scenario.announcement)
            let seen = Counter()
            let consumer = Task {
                for await event in stream {
                    if case .found(let endpoint) = event {
                        try Self.rejectSelf(endpoint, scenario: scenario, check: check)
                    }
                    seen.increment()
                }
            }
            // Let it get going: wait for a first event when one is expected.
            if !scenario.expectedPeers.isEmpty {
                try await withDeadline(deadline, check: check, "a first event") {
                    while seen.current == 0 { try await Task.sleep(for: .milliseconds(10)) }
                }
            }
            consumer.cancel()
            try await withDeadline(deadline, check: check, "the consuming task to end after cancellation") {
                _ = await consumer.result
            }
            if case .failure(let error) = await consumer.result, error is ConformanceFailure {
                throw error
            }
            if let isStopped = scenario.isStopped {
                try await withDeadline(deadline, check: check, "the implementation to stop after its stream was terminated") {
                    while await !isStopped() { try await Task.sleep(for: .milliseconds(10)) }
                }
            }
        }
    }

    // MARK: - Helpers

    /// Runs `body` while the scenario's companions announce; stops them afterwards.
    private func withCompanions(_ scenario: DiscoveryScenario, _ body: () async throws -> Void) async throws {
        let tasks = scenario.companions.map { companion in
            Task {
                for await _ in companion.discovery.events(announcing: companion.announcement) {}
            }
        }
        defer { for task in tasks { task.cancel() } }
        try await body()
    }

    private static func rejectSelf(_ endpoint: PeerEndpoint, scenario: DiscoveryScenario, check: String) throws {
        if endpoint.nodeID == scenario.announcement.nodeID
            || scenario.selfEndpoints.contains(where: { matches(endpoint, expected: $0) })
        {
            throw ConformanceFailure(check: check, "the node was reported as found itself: \(endpoint)")
        }
    }

    static func matches(_ endpoint: PeerEndpoint, expected: PeerEndpoint) -> Bool {
        endpoint.host == expected.host && endpoint.port == expected.port
            && (expected.nodeID == nil || expected.nodeID == endpoint.nodeID)
    }
}
