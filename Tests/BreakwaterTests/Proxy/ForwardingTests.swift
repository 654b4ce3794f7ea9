import Foundation
import Testing

/// Requests and responses pass through intact, with the proxy's header duties done.
@Suite struct ForwardingTests {
    /// A parked connection is never handed out once it has been idle for the pool's
    /// `idle_timeout`, which is set below the app's keep-alive timeout so that no request goes
    /// out on a connection the app is closing. The sweep runs only every quarter of it: a
    /// connection parked between sweeps was handed out up to a quarter late.
    @Test func aConnectionIdlePastThePoolsIdleTimeoutIsNotReused() async throws {
        let script: RawScript = { request in
            guard request.isComplete else { return nil }
            return [rawResponse("answer from connection \(request.connection)")]
        }
        try await ProxyHarness.with(rawBackend: script, configuration: "[upstream_pool]\nidle_timeout = \"4s\"\n") { proxy, app in
            let client = try await proxy.connect()
            for _ in 0..<2 {
                // The first parks the connection and starts the sweeps (every 1 s); the second
                // parks it again half-way between two of them.
                try await client.send(get("/"))
                #expect(try await client.readResponse().bodyString == "answer from connection 1")
                try await Task.sleep(for: .milliseconds(500))
            }
            // Past its 4 s and before the next sweep (at 5 s): taken, it would be reused.
            try await Task.sleep(for: .milliseconds(3750))
            try await client.send(get("/"))
            #expect(try await client.readResponse().bodyString == "answer from connection 2")
            await client.close()
        }
    }

    @Test func getReachesTheAppAndTheAnswerComesBack() async throws {
        try await ProxyHarness.with { proxy in
            let response = try await proxy.request(get("/status/201"))
            #expect(response.status == 201)
            #expect(response.bodyString == "status 201")
            #expect(response.header("x-breakwater-reason") == nil)
        }
    }

    @Test func oneMegabytePostArrivesIntact() async throws {
        try await ProxyHarness.with { proxy in
            let body = (0..<1_048_576).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            let client = try await proxy.connect()
            try await client.send("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: \(body.count)\r\n\r\n")
            try await client.send(body)
            let response = try await client.readResponse()
            #expect(response.status == 200)
            #expect(response.body == body)
            #expect(proxy.backend.requestsReceived.last?.body == body)
            await client.close()
        }
    }

    @Test func chunkedPostArrivesIntact() async throws {
        try await ProxyHarness.with { proxy in
            let pieces = ["hello ", String(repeating: "x", count: 70_000), " world"]
            let client = try await proxy.connect()
            try await client.send("POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
            for piece in pieces {
                try await client.send(String(piece.utf8.count, radix: 16) + "\r\n" + piece + "\r\n")
            }
            try await client.send("0\r\n\r\n")
            let response = try await client.readResponse()
            #expect(response.status == 200)
            #expect(response.bodyString == pieces.joined())
            let received = try #require(proxy.backend.requestsReceived.last)
            #expect(received.header("transfer-encoding") == "chunked")
            #expect(received.header("content-length") == nil)
            await client.close()
        }
    }

    @Test func hopByHopHeadersAreDroppedAndForwardingHeadersSet() async throws {
        try await ProxyHarness.with { proxy in
            let response = try await proxy.request(
                get(
                    "/headers",
                    headers: [
                        "Connection: keep-alive, X-Secret-Hop",
                        "X-Secret-Hop: 1",
                        "Keep-Alive: timeout=5",
                        "Proxy-Connection: keep-alive",
                        "TE: trailers",
                        "Trailer: X-T",
                        "Upgrade: h2c",
                        "X-Forwarded-For: 203.0.113.9",
                        "X-Kept: yes",
                        "x-forwarded-for: 198.51.100.2, 192.0.2.4",
                    ]
                )
            )
            #expect(response.status == 200)
            let received = try #require(proxy.backend.requestsReceived.last)
            for dropped in ["connection", "x-secret-hop", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"] {
                #expect(received.header(dropped) == nil, "\(dropped) reached the app")
            }
            #expect(received.header("host") == "test")
            #expect(received.header("x-kept") == "yes")
            // The client's hops in order, however many lines they came in, then the client.
            #expect(received.header("x-forwarded-for") == "203.0.113.9, 198.51.100.2, 192.0.2.4, 127.0.0.1")
            #expect(received.headers.filter { $0.name.lowercased() == "x-forwarded-for" }.count == 1)
            #expect(received.header("x-forwarded-proto") == "http")
        }
    }

    @Test func responsesToHeadAnd204And304CarryNoBody() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send("HEAD /bytes/5000 HTTP/1.1\r\nHost: test\r\n\r\n")
            let head = try await client.readResponse(forHead: true)
            #expect(head.status == 200)
            #expect(head.header("content-length") == "5000")
            #expect(head.body.isEmpty)
            for status in [204, 304] {
                try await client.send(get("/status/\(status)"))
                let response = try await client.readResponse()
                #expect(response.status == status)
                #expect(response.body.isEmpty)
                #expect(response.header("transfer-encoding") == nil)
            }
            // The connection is still in step: a normal request after them works.
            try await client.send(get("/status/200"))
            #expect(try await client.readResponse().bodyString == "status 200")
            await client.close()
        }
    }

    @Test func keepAliveRequestsReuseAHandfulOfAppConnections() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            for index in 0..<200 {
                try await client.send(get("/status/200?n=\(index)"))
                let response = try await client.readResponse()
                #expect(response.status == 200)
            }
            #expect(proxy.backend.connectionsAccepted <= 3)
            #expect(proxy.backend.requestsReceived.count == 200)
            await client.close()
        }
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send(get("/delay/300") + get("/status/201") + get("/status/202"))
            #expect(try await client.readResponse().bodyString == "delayed")
            #expect(try await client.readResponse().status == 201)
            #expect(try await client.readResponse().status == 202)
            await client.close()
        }
    }

    @Test func anAppThatClosesAfterItsAnswerIsNotReused() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send(get("/keepalive-close"))
            #expect(try await client.readResponse().bodyString == "bye")
            for _ in 0..<3 {
                try await client.send(get("/status/200"))
                #expect(try await client.readResponse().status == 200)
            }
            #expect(proxy.backend.connectionsAccepted == 2)
            await client.close()
        }
    }

    @Test func http10ClientGetsAStreamedBodyUntilClose() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send("GET /stream?chunks=3&interval=10 HTTP/1.0\r\nHost: test\r\n\r\n")
            let response = try await client.readResponse()
            #expect(response.status == 200)
            #expect(response.header("transfer-encoding") == nil)
            #expect(response.bodyString == "chunk 0\nchunk 1\nchunk 2\n")
            #expect(try await client.waitForClose())
        }
    }

    /// HTTP/1.0 allows a request without `Host`. It goes on as HTTP/1.1, which requires one, so
    /// the app is sent its own address (nginx's choice) rather than a request it may refuse.
    @Test func anHTTP10RequestWithoutHostReachesTheAppWithOne() async throws {
        try await ProxyHarness.with { proxy in
            let response = try await proxy.request("GET /status/200 HTTP/1.0\r\n\r\n")
            #expect(response.status == 200)
            let received = try #require(proxy.backend.requestsReceived.last)
            #expect(received.header("host") == "127.0.0.1:\(proxy.backend.port)")
        }
    }

    /// `Expect: 100-continue` is the proxy's to answer: the client is told to go on, its body
    /// reaches the app, and the app never sees `Expect`.
    @Test func aClientThatExpectsContinueIsToldToGoOnAndItsBodyArrives() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            let interim = try await client.readResponse()
            #expect(interim.status == 100)
            try await client.send("hello")
            let response = try await client.readResponse()
            #expect(response.status == 200)
            #expect(response.bodyString == "hello")
            let received = try #require(proxy.backend.requestsReceived.last)
            #expect(received.header("expect") == nil)
            await client.close()
        }
    }

    /// A request refused before it reaches the app (an open breaker here) gets the refusal, not
    /// a `100 Continue` first: the client does not send its body for nothing.
    @Test func aRefusedRequestThatExpectsContinueGetsOnlyItsRefusal() async throws {
        try await ProxyHarness.withOpenBreaker { proxy in
            let client = try await proxy.connect()
            try await client.send("POST /switchable HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            let response = try await client.readResponse()
            #expect(response.status == 503)
            #expect(response.header("x-breakwater-reason") == "breaker_open")
            #expect(try await client.waitForClose(), "the unread body would be taken for a request")
        }
    }

    /// An HTTP/1.0 client cannot read a 1xx (RFC 9110 §15.2): its first answer is the final one.
    @Test func anHTTP10ClientThatExpectsContinueIsSentNoInterimAnswer() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send("POST /echo HTTP/1.0\r\nHost: test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            try await Task.sleep(for: .milliseconds(200))
            try await client.send("hello")
            let response = try await client.readResponse()
            #expect(response.status == 200)
            #expect(response.bodyString == "hello")
        }
    }

    /// Field values may carry obs-text (RFC 9110 §5.5: bytes 0x80–0xFF, such as a Latin-1
    /// file name), which is not UTF-8: the proxy passes them on byte for byte, both ways, as
    /// nginx and HAProxy do, rather than replacing them with U+FFFD as a decoder into `String`
    /// would.
    @Test func obsTextInFieldValuesPassesByteForByte() async throws {
        let latin1 = Array("attachment; filename=caf".utf8) + [0xE9, 0xFF] + Array(".txt".utf8)
        let script: RawScript = { request in
            guard request.isComplete else { return nil }
            return [.write(Array("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Disposition: ".utf8) + latin1 + Array("\r\n\r\nok".utf8))]
        }
        try await ProxyHarness.with(rawBackend: script) { proxy, app in
            let client = try await proxy.connect()
            try await client.send(Array("GET / HTTP/1.1\r\nHost: a\r\nX-Name: ".utf8) + latin1 + Array("\r\n\r\n".utf8))
            var answer: [UInt8] = []
            while answer.firstRange(of: Array("\r\n\r\nok".utf8)) == nil {
                answer += try await client.readAvailable()
            }
            #expect(answer.starts(with: Array("HTTP/1.1 200 OK\r\n".utf8)))
            #expect(answer.firstRange(of: Array("\r\nContent-Disposition: ".utf8) + latin1 + Array("\r\n".utf8)) != nil)
            let received = try #require(app.connection(1)).received
            #expect(received.firstRange(of: Array("\r\nX-Name: ".utf8) + latin1 + Array("\r\n".utf8)) != nil)
        }
    }
}
