import Testing

/// Every integration suite lives in this one, serialized: they start real nodes, processes and
/// journald, measure times and bytes, and must not compete with each other for two cores.
@Suite(.serialized) enum Integration {}
