import Metrics

/// The node's metrics, through swift-metrics: whatever backend the executable bootstrapped
/// (Prometheus in `syncctl --metrics-address`) receives them; with none they cost nothing.
/// Every metric carries the node's name as the `node` dimension, so one process running several
/// nodes (the demo, the tests) keeps them apart.
struct NodeMetrics: Sendable {
    let bytesSent: Counter
    let bytesReceived: Counter
    let filesPulled: Counter
    let conflicts: Counter
    let peersConnected: Gauge
    let scanDuration: Metrics.Timer
    let filesHashed: Counter

    init(node: String) {
        let d = [("node", node)]
        bytesSent = Counter(label: "synckit_bytes_sent_total", dimensions: d)
        bytesReceived = Counter(label: "synckit_bytes_received_total", dimensions: d)
        filesPulled = Counter(label: "synckit_files_pulled_total", dimensions: d)
        conflicts = Counter(label: "synckit_conflicts_total", dimensions: d)
        peersConnected = Gauge(label: "synckit_peers_connected", dimensions: d)
        scanDuration = Metrics.Timer(label: "synckit_scan_duration_seconds", dimensions: d, preferredDisplayUnit: .seconds)
        filesHashed = Counter(label: "synckit_files_hashed_total", dimensions: d)
    }
}
