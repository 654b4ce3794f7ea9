import Foundation
import Testing

/// The listener and the app side: connection limits, Unix-domain apps, and clients that send
/// anything at all.
@Suite struct ConnectionTests {
    @Test func anAppOnAUnixSocketIsReached() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("bw-\(UUID().uuidString.prefix(8)).sock").path
        try await ProxyHarness.with(backendSocketPath: path) { proxy in
            let response = try await proxy.request(get("/headers"))
            #expect(response.status == 200)
            // No client IP to report over a Unix socket is not the point: the client's is.
            #expect(proxy.backend.requestsReceived.last?.header("x-forwarded-for") == "127.0.0.1")
        }
    }

    @Test func connectionsBeyondMaxConnectionsAreRefusedAndTheOthersServed() async throws {
        try await ProxyHarness.with(configuration: "[server]\nmax_connections = 2\n") { proxy in
            let first = try await proxy.connect()
            let second = try await proxy.connect()
            try await first.send(get("/status/200"))
            #expect(try await first.readResponse().status == 200)
            let third = try await proxy.connect()
            #expect(try await third.waitForClose(timeout: .seconds(5)))
            try await second.send(get("/status/200"))
            #expect(try await second.readResponse().status == 200)
            // A slot freed is a slot taken again.
            await first.close()
            try await eventually {
                let next = try await proxy.connect()
                defer { Task { await next.close() } }
                try await next.send(get("/status/200"))
                return (try? await next.readResponse(timeout: .seconds(1)))?.status == 200
            }
            await second.close()
        }
    }

    @Test func garbageFromManyClientsNeitherCrashesNorStopsTheProxy() async throws {
        try await ProxyHarness.with { proxy in
            var generator = SystemRandomNumberGenerator()
            for round in 0..<50 {
                let client = try await proxy.connect()
                let length = Int.random(in: 1...4096, using: &generator)
                var bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
                if round.isMultiple(of: 2) {
                    // Half of them start like a request, so the garbage lands in later states.
                    bytes = Array("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".utf8) + bytes
                }
                try? await client.send(bytes)
                await client.close()
            }
            let response = try await proxy.request(get("/status/200"))
            #expect(response.status == 200)
        }
    }
}
