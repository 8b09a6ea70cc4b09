// swift-tools-version:6.0
// SyncKit: peer-to-peer folder sync for a LAN.
//
// Layout (fixed by the product owner, see ARCHITECTURE.md):
//   SyncKit            model, plugin protocols, scanner, index, wire codec, engine (no sockets)
//   SyncKitTesting     in-memory transport/discovery and the conformance kits every plugin runs
//   DiscoveryStatic    fixed peer list (host:port, names re-resolved)
//   DiscoveryMDNSLite  DNS-SD over mDNS
//   TransportTCP       framed TCP on SwiftNIO
//   syncctl            the CLI and daemon
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "SyncKit",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "SyncKit", targets: ["SyncKit"]),
        .library(name: "SyncKitTesting", targets: ["SyncKitTesting"]),
        .library(name: "TransportTCP", targets: ["TransportTCP"]),
        .library(name: "DiscoveryStatic", targets: ["DiscoveryStatic"]),
        .library(name: "DiscoveryMDNSLite", targets: ["DiscoveryMDNSLite"]),
        .library(name: "JournaldLogging", targets: ["JournaldLogging"]),
        .library(name: "ProtocolBEP", targets: ["ProtocolBEP"]),
        .executable(name: "syncctl", targets: ["syncctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
    ],
    targets: [
        // syncfs(2) for the group commit of pulled files (not exported by Swift's Glibc module).
        .target(name: "CSyncKitShims"),
        .target(
            name: "SyncKit",
            dependencies: [
                "CSyncKitShims", "CLZ4",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "SyncKitTesting",
            dependencies: [
                "SyncKit", .product(name: "NIOCore", package: "swift-nio"), .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "TransportTCP",
            dependencies: [
                "SyncKit", "ProtocolBEP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "DiscoveryStatic",
            dependencies: ["SyncKit", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        .target(
            name: "DiscoveryMDNSLite",
            dependencies: [
                "SyncKit",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .systemLibrary(
            name: "CSystemd", path: "Sources/CSystemd", pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]
        ),
        // Debian's liblz4: the LZ4 blocks of Syncthing's compressed BEP messages and of SyncKit's
        // compressed index updates (`LZ4Block`).
        .systemLibrary(
            name: "CLZ4", path: "Sources/CLZ4", pkgConfig: "liblz4",
            providers: [.apt(["liblz4-dev"])]
        ),
        // Syncthing's Block Exchange Protocol: framing, messages (generated from Proto/bep.proto
        // and committed) and the mapping of Syncthing's block lists and device IDs to ours.
        .target(
            name: "ProtocolBEP",
            dependencies: [
                "SyncKit", "CLZ4",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            exclude: ["README.md"],
            swiftSettings: strict
        ),
        .target(
            name: "JournaldLogging",
            dependencies: ["CSystemd", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        // The `--config FILE` loader of syncctl, in a library of its own so the fuzz target
        // `config` can link it (an executable target cannot be imported).
        .target(
            name: "SyncCtlConfig",
            dependencies: [.product(name: "Yams", package: "Yams")],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "syncctl",
            dependencies: [
                "SyncKit", "TransportTCP", "DiscoveryStatic", "DiscoveryMDNSLite", "JournaldLogging", "SyncCtlConfig", "ProtocolBEP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            // The dashboard is one HTML file compiled into the binary (no files to ship beside
            // it, nothing fetched at run time): `PackageResources.dashboard_html`.
            resources: [.embedInCode("Dashboard/dashboard.html")],
            swiftSettings: strict
        ),
        // Whole-cluster simulations from seeds (see SyncKitTesting's SimulatedCluster), built in
        // release by scripts/simulate.sh so that CI runs thousands of seeds in seconds.
        .executableTarget(name: "synckit-sim", dependencies: ["SyncKitTesting"], swiftSettings: strict),
        .testTarget(name: "SyncKitTests", dependencies: ["SyncKit", "SyncKitTesting"], swiftSettings: strict),
        .testTarget(
            name: "TransportTCPTests",
            dependencies: ["TransportTCP", "SyncKit", "SyncKitTesting", "ProtocolBEP", .product(name: "NIOEmbedded", package: "swift-nio")],
            swiftSettings: strict),
        .testTarget(
            name: "DiscoveryStaticTests", dependencies: ["DiscoveryStatic", "SyncKit", "SyncKitTesting"],
            swiftSettings: strict),
        .testTarget(name: "DiscoveryMDNSLiteTests", dependencies: ["DiscoveryMDNSLite"], swiftSettings: strict),
        .testTarget(name: "JournaldLoggingTests", dependencies: ["JournaldLogging"], swiftSettings: strict),
        .testTarget(
            name: "ProtocolBEPTests", dependencies: ["ProtocolBEP", "SyncKit", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict),
        .testTarget(name: "SyncCtlConfigTests", dependencies: ["SyncCtlConfig"], swiftSettings: strict),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["SyncKit", "SyncKitTesting", "TransportTCP", "DiscoveryStatic", "JournaldLogging"],
            path: "IntegrationTests",
            swiftSettings: strict
        ),
    ]
)

// MARK: fuzzing (scripts/fuzz.sh)
//
// Only with SYNCKIT_FUZZ=1 in the environment (scripts/fuzz.sh sets it and builds in its own
// scratch path, .build-fuzz): then the package holds just the libFuzzer targets of Fuzz/Sources
// and the modules they test. A plain `swift build` / `swift test` never sees any of this.
//
// Only our own decoding modules are instrumented (`-sanitize=fuzzer,address` as unsafe flags on
// those targets): coverage feedback and AddressSanitizer where the decoders are, while the
// dependencies (SwiftNIO, GRDB, swift-crypto, Yams...) build plain, as fast as in a normal build.
// They stay at -Onone: -O gave 1.3 to 2.3 times the executions per second, but cost two more
// minutes of compile on every CI run, more than it gains in a 30-second run.
if Context.environment["SYNCKIT_FUZZ"] == "1" {
    let instrumented: Set<String> = ["SyncKit", "DiscoveryMDNSLite", "SyncCtlConfig", "ProtocolBEP"]
    let sanitize = ["-sanitize=fuzzer,address"]
    // The modules the fuzz targets link (CSyncKitShims is a few C wrappers and CLZ4 Debian's
    // liblz4, both left plain).
    let kept: Set<String> = instrumented.union(["CSyncKitShims", "CLZ4"])
    package.targets = package.targets.filter { kept.contains($0.name) }
    // `package.dependencies` stays whole, although only syncctl uses swift-argument-parser and
    // swift-prometheus (SwiftPM warns about the latter): with fewer packages, the fuzz build
    // would rewrite Package.resolved without them under the normal build's feet.
    for target in package.targets where instrumented.contains(target.name) {
        target.swiftSettings = (target.swiftSettings ?? []) + [.unsafeFlags(sanitize)]
        // The DNS codec alone (two files that import nothing): the rest of DiscoveryMDNSLite
        // needs SwiftNIO's NIOPosix, a large build that nothing else here uses.
        if target.name == "DiscoveryMDNSLite" {
            target.sources = ["DNSCodec.swift", "DNSMessage.swift"]
            target.dependencies = []
        }
    }
    /// One libFuzzer binary per input class: `name` is the target of scripts/fuzz.sh,
    /// `module` the executable built for it from Fuzz/Sources/<module>.
    let fuzzers: [(name: String, module: String, dependencies: [Target.Dependency])] = [
        ("wire", "FuzzWire", ["SyncKit", .product(name: "NIOCore", package: "swift-nio")]),
        ("record", "FuzzRecord", ["SyncKit", .product(name: "NIOCore", package: "swift-nio")]),
        ("path", "FuzzPath", ["SyncKit"]),
        ("dns", "FuzzDNS", ["DiscoveryMDNSLite"]),
        ("ignore", "FuzzIgnore", ["SyncKit"]),
        ("config", "FuzzConfig", ["SyncCtlConfig"]),
        ("bep", "FuzzBEP", ["ProtocolBEP", "SyncKit"]),
    ]
    package.products = fuzzers.map { .executable(name: $0.module, targets: [$0.module]) }
    // The declaration of libFuzzer's driver, which each target's `@main` calls.
    package.targets.append(.target(name: "CFuzzDriver", path: "Fuzz/Sources/CFuzzDriver"))
    // The `main` all targets share (`runFuzzer`: libFuzzer's driver, or `--write-seeds`).
    package.targets.append(.target(name: "FuzzMain", dependencies: ["CFuzzDriver"], path: "Fuzz/Sources/FuzzMain", swiftSettings: strict))
    for f in fuzzers {
        package.targets.append(.executableTarget(
            name: f.module,
            dependencies: f.dependencies + ["FuzzMain"],
            path: "Fuzz/Sources/\(f.module)",
            // One file with an `@main` type: -parse-as-library so the file is not a script.
            swiftSettings: strict + [.unsafeFlags(sanitize + ["-parse-as-library"])],
            linkerSettings: [.unsafeFlags(sanitize)]
        ))
    }
}
