// swift-tools-version:6.2
// libFuzzer targets for Breakwater; see README.md in this folder. A package of its own, so the
// main package's build and CI never see the sanitizer flags.
import Foundation
import PackageDescription

// A path dependency's identity is its folder's name: "main" here, something else in another
// checkout, so it is worked out rather than written down.
let breakwater = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

let package = Package(
    name: "breakwater-fuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
    ],
    targets: [
        // Built with `-sanitize=fuzzer` (see run.sh). Each has a `main` that hands over to
        // libFuzzer's driver, which calls `LLVMFuzzerTestOneInput` for every input.
        .executableTarget(
            name: "FuzzRequest",
            dependencies: [
                "FuzzDriver",
                .product(name: "Breakwater", package: breakwater),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "FuzzConfig",
            dependencies: [
                "FuzzDriver",
                .product(name: "Breakwater", package: breakwater),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Declares libFuzzer's LLVMFuzzerRunDriver for the targets' own `main`.
        .target(name: "FuzzDriver"),
    ]
)
