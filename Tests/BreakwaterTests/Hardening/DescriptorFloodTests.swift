import Foundation
import Testing

/// Connection floods against the process's file-descriptor limit, run on the real binary under
/// `prlimit` so the limit is small enough to reach.
@Suite(.serialized, .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/prlimit")))
struct DescriptorFloodTests {
    private static func configuration(upstream: Int, extra: String = "") -> String {
        """
        listen = "127.0.0.1:0"
        upstream = "127.0.0.1:\(upstream)"
        \(extra)
        [admin]
        listen = "127.0.0.1:0"
        """
    }

    /// `server.max_connections` set far above what 64 descriptors allow: `accept` fails with
    /// EMFILE during the flood. The connection already open is served throughout (its app
    /// connection is pooled), and once the flood is gone new clients are served again.
    @Test func aFloodPastTheDescriptorLimitLeavesOpenConnectionsServedAndPasses() async throws {
        let backend = try await BackendFixture.start()
        let breakwater = try await BreakwaterProcess(
            configuration: Self.configuration(upstream: backend.port, extra: "[server]\nmax_connections = 10000"),
            descriptorLimit: 64
        )
        let port = try #require(breakwater.port)
        let client = try await RawClient.connect(port: port)
        try await client.send(get("/status/200"))
        #expect(try await client.readResponse().status == 200)

        var flood: [RawClient] = []
        for _ in 0..<200 {
            flood.append(try await RawClient.connect(port: port))
        }
        for round in 0..<3 {
            try await client.send(get("/status/20\(round)"))
            #expect(try await client.readResponse(timeout: .seconds(5)).status == 200 + round, "\(breakwater.log)")
        }
        for connection in flood {
            await connection.close()
        }

        try await Self.expectNewClientsServed(port: port)
        #expect(breakwater.process.isRunning)
        // The drain closes the idle keep-alive connection that rode out the flood.
        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(5)) == 0)
        try await backend.shutdown()
    }

    /// Without `server.max_connections` the bound comes from the descriptor limit, (64 - 64) / 2
    /// raised to the floor of 16 here: the flood beyond it is closed at once, cleanly, and never
    /// runs the process out of descriptors.
    @Test func theDefaultBoundFollowsTheDescriptorLimit() async throws {
        let backend = try await BackendFixture.start()
        let breakwater = try await BreakwaterProcess(configuration: Self.configuration(upstream: backend.port), descriptorLimit: 64)
        let port = try #require(breakwater.port)
        var flood: [RawClient] = []
        for _ in 0..<40 {
            flood.append(try await RawClient.connect(port: port))
        }
        var refused = 0
        for connection in flood where try await connection.waitForClose(timeout: .milliseconds(500)) {
            refused += 1
        }
        #expect(refused == 40 - 16)
        for connection in flood {
            await connection.close()
        }
        try await Self.expectNewClientsServed(port: port)
        #expect(!breakwater.log.contains("Too many open files"), "\(breakwater.log)")
        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(5)) == 0)
        try await backend.shutdown()
    }

    private static func expectNewClientsServed(port: Int) async throws {
        try await eventually(timeout: .seconds(15)) {
            guard let fresh = try? await RawClient.connect(port: port) else { return false }
            defer { Task { await fresh.close() } }
            guard (try? await fresh.send(get("/status/200"))) != nil else { return false }
            return (try? await fresh.readResponse(timeout: .seconds(2)).status) == 200
        }
    }
}
