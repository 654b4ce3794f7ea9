import Foundation
import Testing

/// Bodies stream through with backpressure instead of being collected.
@Suite struct StreamingTests {
    @Test func serverSentEventsArrivePieceByPiece() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            let started = ContinuousClock.now
            try await client.send(get("/sse?events=10&interval=500"))
            let head = try await client.readResponseHead()
            #expect(head.status == 200)
            #expect(head.header("content-type") == "text/event-stream")
            let first = try await client.readAvailable(timeout: .seconds(5))
            let firstArrival = ContinuousClock.now - started
            #expect(String(decoding: first, as: UTF8.self).contains("data: event 0"))
            #expect(!String(decoding: first, as: UTF8.self).contains("data: event 9"))
            // The last event leaves the app after ~4.5 s; the first must not wait for it.
            #expect(firstArrival < .seconds(3), "first event after \(firstArrival)")
            await client.close()
        }
    }

    @Test func largeDownloadToASlowClientKeepsMemoryFlat() async throws {
        try await ProxyHarness.with { proxy in
            let length = 200 * 1024 * 1024
            let client = try await RawClient.connect(port: proxy.port, autoRead: false)
            try await client.send(get("/bytes/\(length)"))
            let baseline = residentMemoryBytes()
            var peak = baseline
            var offset = 0
            var intact = true
            let head = try await client.streamBody(pauseEvery: 8 * 1024 * 1024, pause: .milliseconds(20)) { piece in
                for byte in piece where intact {
                    intact = byte == UInt8(offset % 251)
                    offset += 1
                }
                if !intact { offset += piece.count }
                peak = max(peak, residentMemoryBytes())
            }
            #expect(head.status == 200)
            #expect(offset == length)
            #expect(intact)
            let growth = peak - baseline
            #expect(growth < 64 * 1024 * 1024, "RSS grew by \(growth / 1024 / 1024) MB")
            await client.close()
        }
    }

    /// A slow client's large download ends while its socket is still full, and the request
    /// pipelined behind it goes out on the same app connection. Reads on that connection were
    /// held for the slow client; they must resume for the next answer's head, or the request
    /// waits out its timeout (a 504 the app did not cause, found by the soak). Many rounds of
    /// different sizes, as the timing that exposes it is likely but not certain in any one.
    @Test func aRequestPipelinedBehindASlowDownloadIsAnswered() async throws {
        try await ProxyHarness.with(configuration: "[defaults]\ntimeout = \"1s\"\n") { proxy in
            for round in 0..<60 {
                let client = try await RawClient.connect(port: proxy.port, autoRead: false)
                let length = (1 + round % 7) * 1024 * 1024 + round * 4099
                try await client.send(get("/bytes/\(length)") + get("/echo?round=\(round)"))
                var received = 0
                let download = try await client.streamBody(pauseEvery: 128 * 1024, pause: .milliseconds(1)) {
                    received += $0.count
                }
                #expect(download.status == 200)
                #expect(received == length)
                let next = try await client.readResponse(timeout: .seconds(10))
                #expect(next.status == 200, "round \(round): \(next.status) \(next.header("x-breakwater-reason") ?? "")")
                #expect(next.header("x-echo-uri") == "/echo?round=\(round)")
                await client.close()
            }
        }
    }
}
