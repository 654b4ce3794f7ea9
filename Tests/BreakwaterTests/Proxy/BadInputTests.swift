import Foundation
import Testing

/// What a client sends wrong gets SPEC's status and reason, never reaches the app, and never
/// disturbs anyone else.
@Suite struct BadInputTests {
    private static func expectRejected(
        _ raw: String,
        status: Int,
        reason: String,
        configuration: String = "",
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        try await ProxyHarness.with(configuration: configuration) { proxy in
            let client = try await proxy.connect()
            try await client.send(raw)
            let response = try await client.readResponse()
            #expect(response.status == status, sourceLocation: sourceLocation)
            #expect(response.header("x-breakwater-reason") == reason, sourceLocation: sourceLocation)
            #expect(response.header("content-type") == "application/json", sourceLocation: sourceLocation)
            #expect(response.bodyString.contains("\"reason\":\"\(reason)\""), sourceLocation: sourceLocation)
            #expect(try await client.waitForClose(), "connection left open", sourceLocation: sourceLocation)
            #expect(proxy.backend.requestsReceived.isEmpty, "reached the app", sourceLocation: sourceLocation)
            // The proxy still serves others.
            #expect(try await proxy.request(get("/status/200")).status == 200, sourceLocation: sourceLocation)
        }
    }

    @Test func contentLengthWithTransferEncodingIs400() async throws {
        try await Self.expectRejected(
            "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            status: 400,
            reason: "bad_request"
        )
    }

    /// The decoder frames it by its final `chunked`; forwarded as plain `chunked`, the app would
    /// take the gzip for the body itself.
    @Test func aTransferCodingBesidesChunkedIs400() async throws {
        try await Self.expectRejected(
            "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            status: 400,
            reason: "bad_request"
        )
    }

    @Test func twoDifferentContentLengthsAre400() async throws {
        try await Self.expectRejected(
            "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            status: 400,
            reason: "bad_request"
        )
    }

    @Test func aBadChunkSizeIs400() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send("POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
            let response = try await client.readResponse()
            #expect(response.status == 400)
            #expect(response.header("x-breakwater-reason") == "bad_request")
            #expect(try await client.waitForClose())
            // The head may have gone out before the broken chunk arrived, but never a whole request.
            #expect(proxy.backend.requestsReceived.isEmpty)
        }
    }

    @Test func aSpaceInAHeaderNameIs400() async throws {
        try await Self.expectRejected(
            "GET / HTTP/1.1\r\nHost: test\r\nBad Header: x\r\n\r\n",
            status: 400,
            reason: "bad_request"
        )
    }

    @Test func garbageIs400() async throws {
        try await Self.expectRejected("\u{1}\u{2}NOT HTTP AT ALL\r\n\r\n", status: 400, reason: "bad_request")
    }

    @Test func aHeadOverMaxHeaderBytesIs431() async throws {
        try await Self.expectRejected(
            get("/", headers: ["X-Big: " + String(repeating: "a", count: 5000)]),
            status: 431,
            reason: "header_too_large",
            configuration: "[server]\nmax_header_bytes = \"4KB\"\n"
        )
    }

    @Test func aRequestLineOverMaxHeaderBytesIs431() async throws {
        try await Self.expectRejected(
            get("/" + String(repeating: "a", count: 6000)),
            status: 431,
            reason: "header_too_large",
            configuration: "[server]\nmax_header_bytes = \"4KB\"\n"
        )
    }

    @Test func aDeclaredBodyOverMaxBodyBytesIs413() async throws {
        try await Self.expectRejected(
            "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 2000\r\n\r\n",
            status: 413,
            reason: "body_too_large",
            configuration: "[server]\nmax_body_bytes = 1000\n"
        )
    }

    /// A client uploading a body the proxy refused keeps sending for a moment before it
    /// reads the answer (most HTTP client libraries read only once the body is out). Closing
    /// at once would meet its bytes with a reset, and the client would see "connection reset"
    /// instead of the 413. The proxy lingers: it sends its answer, ends its side, and reads and
    /// drops what still comes until the client closes (nginx's `lingering_close`).
    @Test func aClientStillUploadingARefusedBodyGetsTheAnswerNotAReset() async throws {
        try await ProxyHarness.with(configuration: "[server]\nmax_body_bytes = \"1MB\"\n") { proxy in
            for round in 0..<5 {
                let client = try await proxy.connect()
                let length = 4 * 1024 * 1024
                try await client.send("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: \(length)\r\n\r\n")
                // Let the 413 be written first, as it would be across a network.
                try await Task.sleep(for: .milliseconds(50))
                for _ in 0..<(length / 65536) {
                    try await client.send([UInt8](repeating: 0x61, count: 65536))
                }
                let response = try await client.readResponse()
                #expect(response.status == 413, "round \(round)")
                #expect(response.header("x-breakwater-reason") == "body_too_large")
                #expect(response.header("connection") == "close")
                await client.close()
            }
            #expect(proxy.backend.requestsReceived.isEmpty)
        }
    }

    @Test func aChunkedBodyOverMaxBodyBytesIs413() async throws {
        try await ProxyHarness.with(configuration: "[server]\nmax_body_bytes = 1000\n") { proxy in
            let client = try await proxy.connect()
            try await client.send("POST /delay/2000 HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
            let chunk = String(repeating: "z", count: 600)
            try await client.send("258\r\n\(chunk)\r\n258\r\n\(chunk)\r\n")
            let response = try await client.readResponse()
            #expect(response.status == 413)
            #expect(response.header("x-breakwater-reason") == "body_too_large")
            #expect(try await client.waitForClose())
        }
    }

    @Test func aSlowlorisHeadIsCutOffOnTime() async throws {
        try await ProxyHarness.with(configuration: "[server]\nheader_read_timeout = \"1s\"\n") { proxy in
            let client = try await proxy.connect()
            let started = ContinuousClock.now
            // One byte every 200 ms: always sending, never finishing.
            let trickle = Task {
                for byte in "GET / HTTP/1.1\r\nHost: test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".utf8 {
                    try await client.send([byte])
                    try await Task.sleep(for: .milliseconds(200))
                }
            }
            let response = try await client.readResponse(timeout: .seconds(10))
            let elapsed = ContinuousClock.now - started
            trickle.cancel()
            #expect(response.status == 408)
            #expect(response.header("x-breakwater-reason") == "header_timeout")
            #expect(elapsed >= .milliseconds(900) && elapsed < .seconds(4), "cut after \(elapsed)")
            #expect(try await client.waitForClose())
            #expect(proxy.backend.requestsReceived.isEmpty)
        }
    }

    @Test func anIdleKeepAliveClientIsClosedAfterIdleTimeout() async throws {
        try await ProxyHarness.with(configuration: "[server]\nidle_timeout = \"1s\"\n") { proxy in
            let client = try await proxy.connect()
            try await client.send(get("/status/200"))
            #expect(try await client.readResponse().status == 200)
            let idleSince = ContinuousClock.now
            #expect(try await client.waitForClose(timeout: .seconds(6)))
            let idle = ContinuousClock.now - idleSince
            #expect(idle >= .milliseconds(600), "closed after only \(idle)")
        }
    }

    /// A body that came in a read after its head is the request's own, not the start of the
    /// next head: the kept-alive connection then waits out `idle_timeout`, not
    /// `header_read_timeout`, and is never answered a 408 it did not ask for.
    @Test func aKeptAliveConnectionAfterAnUploadIsIdleNotLate() async throws {
        try await ProxyHarness.with(configuration: "[server]\nheader_read_timeout = \"1s\"\nidle_timeout = \"30s\"\n") { proxy in
            let client = try await proxy.connect()
            try await client.send("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\n")
            try await Task.sleep(for: .milliseconds(200))  // the body in a read of its own
            try await client.send("hello")
            let echoed = try await client.readResponse()
            #expect(echoed.status == 200)
            #expect(echoed.bodyString == "hello")
            // Idle for twice the header timeout: nothing arrives, and the connection serves on.
            let unasked = try? await client.readAvailable(timeout: .seconds(2))
            #expect(unasked == nil, "answered unasked: \(String(decoding: unasked ?? [], as: UTF8.self).debugDescription)")
            try await client.send(get("/status/200"))
            #expect(try await client.readResponse().status == 200)
        }
    }

    @Test func aConnectionThatSendsNothingIsClosed() async throws {
        try await ProxyHarness.with(configuration: "[server]\nheader_read_timeout = \"1s\"\n") { proxy in
            let client = try await proxy.connect()
            #expect(try await client.waitForClose(timeout: .seconds(6)))
        }
    }
}
