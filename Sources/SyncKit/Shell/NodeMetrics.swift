import Metrics

/// The node's metrics, through swift-metrics: whatever backend the executable bootstrapped
/// (Prometheus in `syncctl --metrics-address`) receives them; with none they cost nothing.
/// Every metric carries the node's name as the `node` dimension, so one process running several
/// nodes (the demo, the tests) keeps them apart.
struct NodeMetrics: Sendable {
    let bytesSent: Counter
    let bytesReceived: Counter
    let filesPulled: Counter
    let filesMoved: Counter
    let conflicts: Counter
    let peersConnected: Gauge
    let scanDuration: Metrics.Timer
    let filesHashed: Counter

    init(node: String) {
        let d = [("node", node)]
        bytesSent = Counter(label: "synckit_bytes_sent_total", dimensions: d)
        bytesReceived = Counter(label: "synckit_bytes_received_total", dimensions: d)
        filesPulled = Counter(label: "synckit_files_pulled_total", dimensions: d)
        filesMoved = Counter(label: "synckit_files_moved_total", dimensions: d)
        conflicts = Counter(label: "synckit_conflicts_total", dimensions: d)
        peersConnected = Gauge(label: "synckit_peers_connected", dimensions: d)
        scanDuration = Metrics.Timer(label: "synckit_scan_duration_seconds", dimensions: d, preferredDisplayUnit: .seconds)
        filesHashed = Counter(label: "synckit_files_hashed_total", dimensions: d)
    }

    /// Moves the counters by what the machine's statistics gained since `before`; returns the
    /// statistics to compare against next time. The machine's statistics are the one count;
    /// the metrics follow them.
    func publish(_ now: NodeMachine.Statistics, since before: NodeMachine.Statistics, peers: Int) -> NodeMachine.Statistics {
        if now.filesPulled > before.filesPulled { filesPulled.increment(by: now.filesPulled - before.filesPulled) }
        if now.filesMoved > before.filesMoved { filesMoved.increment(by: now.filesMoved - before.filesMoved) }
        if now.conflicts > before.conflicts { conflicts.increment(by: now.conflicts - before.conflicts) }
        if now.filesHashed > before.filesHashed { filesHashed.increment(by: now.filesHashed - before.filesHashed) }
        if now.bytesReceived > before.bytesReceived { bytesReceived.increment(by: now.bytesReceived - before.bytesReceived) }
        peersConnected.record(peers)
        return now
    }
}
