import Testing

/// An answer that comes before the request's end — a refusal while the body is still on its
/// way, or the app answering an upload before it read it: the rest of the body is read and
/// dropped, never taken for a request, and the connection carries the next request when that
/// rest is small; when it is large the connection closes instead (and when the client waits
/// for `100 Continue`: `ForwardingTests`).
@Suite struct EarlyAnswerTests {
    /// One slot, taken by a slow request: everything else is shed at once.
    private static let oneSlot = "[concurrency]\nsoft_limit = 1\nhard_limit = 1\n"

    /// Takes the proxy's one slot for `milliseconds`; returns once the app has the request.
    private static func holdTheSlot(_ proxy: ProxyHarness, milliseconds: Int = 1500) async throws -> Task<RawResponse, any Error> {
        let holder = Task { try await proxy.request(get("/delay/\(milliseconds)")) }
        try await eventually { proxy.backend.requestCount(pathPrefix: "/delay/") == 1 }
        return holder
    }

    /// The connection, refused while its body was still to come, is in step: the next request
    /// on it reaches the app whole, and nothing of the dropped body ever did.
    private static func expectInStep(_ client: RawClient, _ proxy: ProxyHarness, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        try await client.send("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n\r\nhello")
        let next = try await client.readResponse()
        #expect(next.status == 200, sourceLocation: sourceLocation)
        #expect(next.bodyString == "hello", sourceLocation: sourceLocation)
        let echoes = proxy.backend.requestsReceived.filter { $0.uri == "/echo" }
        #expect(echoes.map { String(decoding: $0.body, as: UTF8.self) } == ["hello"], sourceLocation: sourceLocation)
        #expect(proxy.backend.requestsReceived.count == 2, "the app saw \(proxy.backend.requestsReceived.map(\.uri))", sourceLocation: sourceLocation)
    }

    @Test func aShedUploadKeepsItsConnectionOnceTheRestOfItsBodyIsDropped() async throws {
        try await ProxyHarness.with(configuration: Self.oneSlot) { proxy in
            let holder = try await Self.holdTheSlot(proxy)
            let client = try await proxy.connect()
            try await client.send("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 10000\r\n\r\n")
            let refused = try await client.readResponse()
            #expect(refused.status == 503)
            #expect(refused.header("x-breakwater-reason") == "hard_limit")
            #expect(refused.header("connection") == nil)
            // The body the client was already sending, in two pieces; the second request's
            // first line would be smuggled in here if the proxy lost its place.
            try await client.send(String(repeating: "a", count: 6000))
            try await client.send(String(repeating: "b", count: 4000))
            #expect(try await holder.value.status == 200)
            try await Self.expectInStep(client, proxy)
            await client.close()
        }
    }

    @Test func aChunkedUploadRefusedByAnOpenBreakerKeepsItsConnection() async throws {
        try await ProxyHarness.withOpenBreaker { proxy in
            let client = try await proxy.connect()
            try await client.send("POST /switchable HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            let refused = try await client.readResponse()
            #expect(refused.status == 503)
            #expect(refused.header("x-breakwater-reason") == "breaker_open")
            #expect(refused.header("connection") == nil)
            try await client.send("6\r\n world\r\n0\r\n\r\n")
            try await Self.expectInStep(client, proxy)
            await client.close()
        }
    }

    /// The app answers an upload at once (a 401 before reading it, say): the client is kept,
    /// the rest of its body dropped, and the next request goes to the app on a new connection.
    @Test func anAppThatAnswersBeforeReadingTheUploadLeavesTheClientKept() async throws {
        let script: RawScript = { request in
            if request.requestLine?.hasPrefix("POST") == true {
                return [rawResponse("no", status: "401 Unauthorized")]
            }
            guard request.isComplete else { return nil }
            return [rawResponse("fresh \(request.connection).\(request.index)")]
        }
        try await ProxyHarness.with(rawBackend: script) { proxy, app in
            let client = try await proxy.connect()
            try await client.send("POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 3000\r\n\r\n")
            let early = try await client.readResponse()
            #expect(early.status == 401)
            #expect(early.header("connection") == nil)
            try await client.send(String(repeating: "z", count: 3000))
            try await client.send(get("/next"))
            let next = try await client.readResponse()
            #expect(next.status == 200)
            #expect(next.bodyString == "fresh 2.0")
            #expect(app.connections.map(\.requestLines) == [["POST /upload HTTP/1.1"], ["GET /next HTTP/1.1"]])
            await client.close()
        }
    }

    /// More than `DownstreamHandler.maxDiscardedBodyBytes` still to come: not worth reading.
    @Test func aRefusedUploadWithALargeRestClosesItsConnection() async throws {
        try await ProxyHarness.with(configuration: Self.oneSlot) { proxy in
            let holder = try await Self.holdTheSlot(proxy)
            let client = try await proxy.connect()
            try await client.send("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000\r\n\r\n")
            let refused = try await client.readResponse()
            #expect(refused.status == 503)
            #expect(refused.header("connection") == "close")
            #expect(try await client.waitForClose())
            _ = try await holder.value
        }
    }

    /// A chunked rest has no declared size: it is dropped until it passes the bound, and then
    /// the connection closes (after the answer, which the client already has).
    @Test func aRefusedChunkedUploadThatRunsPastTheBoundIsClosed() async throws {
        try await ProxyHarness.with(configuration: Self.oneSlot) { proxy in
            let holder = try await Self.holdTheSlot(proxy)
            let client = try await proxy.connect()
            try await client.send("POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
            let refused = try await client.readResponse()
            #expect(refused.status == 503)
            #expect(refused.header("connection") == nil)
            let chunk = "4000\r\n" + String(repeating: "c", count: 0x4000) + "\r\n"
            for _ in 0..<5 {
                try await client.send(chunk)
            }
            #expect(try await client.waitForClose(), "80 KB of a refused body were read on")
            _ = try await holder.value
        }
    }

    /// A client that stops sending the rest of a refused body holds no connection for ever:
    /// the route's `body_timeout` applies to what is dropped as to what is forwarded.
    @Test func aRefusedUploadWhoseRestStallsIsClosedAfterTheBodyTimeout() async throws {
        try await ProxyHarness.with(configuration: Self.oneSlot + "[defaults]\nbody_timeout = \"1s\"\n") { proxy in
            let holder = try await Self.holdTheSlot(proxy, milliseconds: 300)
            let client = try await proxy.connect()
            try await client.send("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n")
            #expect(try await client.readResponse().status == 503)
            try await client.send(String(repeating: "s", count: 50))
            _ = try await holder.value
            #expect(try await client.waitForClose(timeout: .seconds(8)), "a stalled rest kept the connection")
        }
    }

    /// Nor does one that trickles it: the whole rest must come within the route's `timeout`.
    @Test func aRefusedUploadTricklingPastTheRouteTimeoutIsClosed() async throws {
        let configuration = Self.oneSlot + "[defaults]\ntimeout = \"2s\"\nbody_timeout = \"1s\"\n"
        try await ProxyHarness.with(configuration: configuration) { proxy in
            let holder = try await Self.holdTheSlot(proxy, milliseconds: 1000)
            let client = try await proxy.connect()
            try await client.send("POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n")
            #expect(try await client.readResponse().status == 503)
            let refusedAt = ContinuousClock.now
            let trickle = Task {
                for _ in 0..<40 {
                    try? await client.send(String(repeating: "t", count: 10))
                    try await Task.sleep(for: .milliseconds(300))
                }
            }
            #expect(try await client.waitForClose(timeout: .seconds(10)), "a trickled rest kept the connection")
            let held = ContinuousClock.now - refusedAt
            trickle.cancel()
            #expect(held < .seconds(7), "closed after \(held)")
            _ = try await holder.value
        }
    }

    /// A drain does not wait for a body nobody will read: the connection dropping it closes
    /// when the drain begins (its answer already went out), and the drain ends at once.
    @Test func aDrainClosesAConnectionDroppingARefusedBody() async throws {
        try await ProxyHarness.withOpenBreaker { proxy in
            let client = try await proxy.connect()
            try await client.send("POST /switchable HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\nfirst part")
            let refused = try await client.readResponse()
            #expect(refused.status == 503)
            #expect(refused.header("connection") == nil)
            let started = ContinuousClock.now
            let cut = try await proxy.proxy.shutdown(gracePeriod: .seconds(20))
            #expect(cut == 0)
            // At most the 2 s linger for the client to stop sending (`LingeringClose`).
            #expect(ContinuousClock.now - started < .seconds(8), "the drain waited \(ContinuousClock.now - started)")
            #expect(try await client.waitForClose(timeout: .seconds(5)))
        }
    }

    /// An HTTP/1.0 client is never sent `100 Continue` (it would take it for the answer), so
    /// one that asked for it and sent no body yet may be waiting: refused, it is closed, as a
    /// waiting HTTP/1.1 client is (`ForwardingTests`), or its next request would be dropped as
    /// that body.
    @Test func anHTTP10ClientThatMayWaitForContinueIsClosedWhenRefused() async throws {
        try await ProxyHarness.with(configuration: Self.oneSlot) { proxy in
            let holder = try await Self.holdTheSlot(proxy)
            let client = try await proxy.connect()
            try await client.send("POST /echo HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            let refused = try await client.readResponse()
            #expect(refused.status == 503)
            #expect(try await client.waitForClose(), "a keep-alive answer would take the next request for the body")
            _ = try await holder.value
        }
    }
}
