// swift-tools-version:6.1
// Micro-benchmarks of Breakwater's hot types with ordo-one/benchmark; see README.md in this
// folder. A package of its own, so the main package's build and CI never see the benchmark
// dependencies.
import Foundation
import PackageDescription

// A path dependency's identity is its folder's name: "main" here, something else in another
// checkout, so it is worked out rather than written down.
let breakwater = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

let package = Package(
    name: "breakwater-benchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(path: ".."),
        // ordo-one/benchmark, formerly package-benchmark (under the old name its plugin warns
        // that the identifier is going away). Only the malloc interposer, which counts the
        // allocations without jemalloc: the default traits would add the Swift-runtime
        // interposer too, a package of its own on Linux Swift 6.3, not needed for these metrics.
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        // The benchmark plugin runs every executable target under Benchmarks/.
        .executableTarget(
            name: "BreakwaterBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "Breakwater", package: breakwater),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            path: "Benchmarks/BreakwaterBenchmarks",
            plugins: [
                .plugin(name: "BenchmarkPlugin", package: "benchmark")
            ]
        )
    ]
)
