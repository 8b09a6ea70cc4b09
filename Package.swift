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
    ],
    targets: [
        // syncfs(2) for the group commit of pulled files (not exported by Swift's Glibc module).
        .target(name: "CSyncKitShims"),
        .target(
            name: "SyncKit",
            dependencies: [
                "CSyncKitShims",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Metrics", package: "swift-metrics"),
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
                "SyncKit",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
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
        .target(
            name: "JournaldLogging",
            dependencies: ["CSystemd", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "syncctl",
            dependencies: [
                "SyncKit", "TransportTCP", "DiscoveryStatic", "DiscoveryMDNSLite", "JournaldLogging",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // Whole-cluster simulations from seeds (see SyncKitTesting's SimulatedCluster), built in
        // release by scripts/simulate.sh so that CI runs thousands of seeds in seconds.
        .executableTarget(name: "synckit-sim", dependencies: ["SyncKitTesting"], swiftSettings: strict),
        .testTarget(name: "SyncKitTests", dependencies: ["SyncKit", "SyncKitTesting"], swiftSettings: strict),
        .testTarget(
            name: "TransportTCPTests", dependencies: ["TransportTCP", "SyncKit", "SyncKitTesting"],
            swiftSettings: strict),
        .testTarget(
            name: "DiscoveryStaticTests", dependencies: ["DiscoveryStatic", "SyncKit", "SyncKitTesting"],
            swiftSettings: strict),
        .testTarget(name: "DiscoveryMDNSLiteTests", dependencies: ["DiscoveryMDNSLite"], swiftSettings: strict),
        .testTarget(name: "JournaldLoggingTests", dependencies: ["JournaldLogging"], swiftSettings: strict),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["SyncKit", "SyncKitTesting", "TransportTCP", "DiscoveryStatic", "JournaldLogging"],
            path: "IntegrationTests",
            swiftSettings: strict
        ),
    ]
)
