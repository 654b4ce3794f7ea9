import Foundation
import Testing

/// Apps that answer wrong on the wire (issue #8): the client gets a 502 or a cut connection as
/// appropriate — never a response spliced from two — and an app connection that misbehaved
/// never carries another request (checked on the raw app's own record of its connections).
@Suite struct BrokenAppTests {
    /// One attempt per request, so every app connection and request is accounted for, and a
    /// breaker that stays closed through a test's few failures.
    private static let oneAttempt = """
        [defaults.retry]
        attempts = 1
        [defaults.breaker]
        failure_threshold = 1000

        """

    private static func expect502(_ response: RawResponse, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(response.status == 502, "got \(response.status): \(response.bodyString)", sourceLocation: sourceLocation)
        #expect(response.header("x-breakwater-reason") == "upstream_unavailable", sourceLocation: sourceLocation)
    }

    /// Connection 1 misbehaves with `steps`; every later connection answers properly, saying
    /// which connection and which request on it answered.
    private static func firstConnectionDoes(_ steps: [RawStep]) -> RawScript {
        { request in
            guard request.isComplete else { return nil }
            if request.connection == 1 {
                return request.index == 0 ? steps : [rawResponse("REUSED connection 1")]
            }
            return [rawResponse("fresh \(request.connection).\(request.index)")]
        }
    }

    /// After the first request met the misbehaving connection 1: the next request, on the
    /// same client connection when it is still open, gets a clean answer from a new app
    /// connection, and connection 1 carried exactly one request and was closed by the proxy.
    private static func expectBadConnectionDropped(
        _ proxy: ProxyHarness,
        _ app: RawBackend,
        client: RawClient?,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let next: RawResponse
        if let client {
            try await client.send(get("/next"))
            next = try await client.readResponse()
        } else {
            next = try await proxy.request(get("/next"))
        }
        #expect(next.status == 200, sourceLocation: sourceLocation)
        #expect(next.bodyString == "fresh 2.0", "the next request got \(next.bodyString.debugDescription)", sourceLocation: sourceLocation)
        #expect(app.connection(1)?.requestLines.count == 1, "connection 1 carried \(app.connection(1)?.requestLines ?? [])", sourceLocation: sourceLocation)
        try await eventually { app.connection(1)?.closed == true }
    }

    // MARK: a. Reset mid-body

    /// The app sends its head (Content-Length 1000) and 100 bytes, then resets. The status is
    /// out, so the client sees a cut: fewer bytes than announced, then a close (or a 502 if the
    /// proxy caught it before the head left) — never a complete-looking response.
    @Test func anAppThatResetsMidBodyCutsTheClientAndIsNotReused() async throws {
        let steps: [RawStep] = [
            .text("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + String(repeating: "a", count: 100)),
            .delay(.milliseconds(150)),
            .reset,
        ]
        try await ProxyHarness.with(rawBackend: Self.firstConnectionDoes(steps), configuration: Self.oneAttempt) { proxy, app in
            let client = try await proxy.connect()
            try await client.send(get("/first"))
            let head = try await client.readResponseHead()
            if head.status == 502 {
                #expect(head.header("x-breakwater-reason") == "upstream_unavailable")
            } else {
                #expect(head.status == 200)
                #expect(head.header("content-length") == "1000")
                #expect(try await client.waitForClose(), "a cut response left the client connection open")
                let body = (try? await client.readAvailable(timeout: .milliseconds(100))) ?? []
                #expect(body.count < 1000, "a cut body arrived whole: \(body.count) bytes")
                #expect(body.allSatisfy { $0 == UInt8(ascii: "a") }, "bytes from elsewhere in the body")
            }
            try await Self.expectBadConnectionDropped(proxy, app, client: nil)
        }
    }

    // MARK: b, c. Unparseable responses

    private static let malformed: [(name: String, response: String)] = [
        ("Content-Length: abc", "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello"),
        ("two different Content-Lengths", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("status 2OO", "HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok"),
        ("not HTTP at all", "SSH-2.0-OpenSSH_9.6\r\n\r\n"),
        // Framed by its final `chunked`, but the gzip would be dropped on the way to the client.
        ("Transfer-Encoding: gzip, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ("Transfer-Encoding: gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello"),
    ]

    /// A response the proxy cannot frame (or pass on as framed) is a 502, not a guess; the client's connection stays
    /// usable, and the app connection that sent it is closed, never reused. The app leaves its
    /// connection open: closing it is the proxy's job.
    @Test(arguments: Self.malformed.indices)
    func anUnparseableResponseIs502AndItsConnectionIsDropped(index: Int) async throws {
        let (name, raw) = Self.malformed[index]
        try await ProxyHarness.with(rawBackend: Self.firstConnectionDoes([.text(raw)]), configuration: Self.oneAttempt) { proxy, app in
            let client = try await proxy.connect()
            try await client.send(get("/first"))
            let response = try await client.readResponse()
            #expect(response.status == 502, "\(name): got \(response.status) \(response.bodyString.debugDescription)")
            #expect(response.header("x-breakwater-reason") == "upstream_unavailable", "\(name)")
            try await Self.expectBadConnectionDropped(proxy, app, client: client)
        }
    }

    /// With the default retry rules (three attempts, `reset` among them): an answer the proxy
    /// refuses is not asked for again, since the app would most likely send the same; an answer
    /// cut off by the app's close is a reset, and is.
    @Test func aMalformedAnswerIsNotRetriedButATruncatedOneIs() async throws {
        let noBreaker = "[defaults.breaker]\nfailure_threshold = 1000\n"
        for (name, steps) in [("status 2OO", [RawStep.text("HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok")]), ("Transfer-Encoding: gzip", [.text("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello")])] {
            try await ProxyHarness.with(rawBackend: Self.firstConnectionDoes(steps), configuration: noBreaker) { proxy, app in
                Self.expect502(try await proxy.request(get("/first")))
                #expect(app.requestCount == 1, "\(name): the app was asked \(app.requestCount) times")
            }
        }
        let truncated: [RawStep] = [.text("HTTP/1.1 200 OK\r\nContent-Len"), .close]
        try await ProxyHarness.with(rawBackend: Self.firstConnectionDoes(truncated), configuration: noBreaker) { proxy, app in
            let response = try await proxy.request(get("/first"))
            #expect(response.status == 200)
            #expect(response.bodyString == "fresh 2.0")
        }
    }

    // MARK: d. Endless head

    /// Response header lines without end (8 MB, far over any sane limit): a 502 well before the
    /// route's 10 s timeout — the proxy gives up at its header limit instead of buffering.
    @Test func anEndlessResponseHeadIs502WithoutWaitingForTheTimeout() async throws {
        let line = "X-Endless: " + String(repeating: "h", count: 1000) + "\r\n"
        let megabyte = String(repeating: line, count: 1000)
        var steps: [RawStep] = [.text("HTTP/1.1 200 OK\r\n")]
        for _ in 0..<8 {
            steps += [.text(megabyte), .delay(.milliseconds(20))]
        }
        steps.append(.hang)
        try await ProxyHarness.with(
            rawBackend: Self.firstConnectionDoes(steps),
            configuration: "[defaults]\ntimeout = \"10s\"\n" + Self.oneAttempt
        ) { proxy, app in
            let client = try await proxy.connect()
            let started = ContinuousClock.now
            try await client.send(get("/first"))
            let response = try await client.readResponse(timeout: .seconds(15))
            let elapsed = ContinuousClock.now - started
            Self.expect502(response)
            #expect(elapsed < .seconds(5), "answered after \(elapsed)")
            try await Self.expectBadConnectionDropped(proxy, app, client: client)
        }
    }

    // MARK: e. A body longer than announced

    /// `later`: the extra bytes come once the connection is idle, and the proxy drops it then.
    private static let overlong: [(name: String, steps: [RawStep], later: Bool)] = [
        (
            "10 bytes for 5, then a response, in one write",
            [.text("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloWORLD" + "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSPLICED!")],
            false
        ),
        (
            "5 bytes, then a whole second response, in one write",
            [.text("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSPLICED!")],
            false
        ),
        (
            "5 bytes, then a second response while the connection is idle",
            [
                .text("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
                .delay(.milliseconds(50)),
                .text("WORLDHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSPLICED!"),
            ],
            true
        ),
    ]

    /// The app announces 5 bytes and sends more, with another response behind: the client gets
    /// exactly the 5 bytes, and the extra bytes never become anybody's next response — the
    /// connection they came on is closed, not reused.
    @Test(arguments: Self.overlong.indices)
    func bytesBeyondContentLengthNeverBecomeTheNextResponse(index: Int) async throws {
        let (name, steps, later) = Self.overlong[index]
        try await ProxyHarness.with(rawBackend: Self.firstConnectionDoes(steps), configuration: Self.oneAttempt) { proxy, app in
            let client = try await proxy.connect()
            try await client.send(get("/first"))
            let first = try await client.readResponse()
            #expect(first.status == 200, "\(name)")
            #expect(first.bodyString == "hello", "\(name): body \(first.bodyString.debugDescription)")
            if later {
                try await eventually { app.connection(1)?.closed == true }
            }
            // Nothing after the 5 bytes on the client connection.
            let stray = try? await client.readAvailable(timeout: .milliseconds(100))
            #expect(stray == nil, "\(name): stray bytes \(String(decoding: stray ?? [], as: UTF8.self).debugDescription)")
            try await Self.expectBadConnectionDropped(proxy, app, client: client)
            // And no other client ever sees them either.
            for _ in 0..<3 {
                let response = try await proxy.request(get("/more"))
                #expect(!response.bodyString.contains("SPLICED") && !response.bodyString.contains("REUSED"), "\(name)")
            }
        }
    }

    /// The same, with the client's next request pipelined behind the first: it starts as the
    /// first answer ends, while the app's read holding the extra bytes is still being decoded,
    /// and must not be sent on that connection, whose next "response" is already there.
    @Test(arguments: Self.overlong.indices.filter { !Self.overlong[$0].later })
    func bytesBeyondContentLengthNeverAnswerAPipelinedRequest(index: Int) async throws {
        let (name, steps, _) = Self.overlong[index]
        try await ProxyHarness.with(rawBackend: Self.firstConnectionDoes(steps), configuration: Self.oneAttempt) { proxy, app in
            let client = try await proxy.connect()
            try await client.send(get("/first") + get("/second"))
            let first = try await client.readResponse()
            #expect(first.status == 200, "\(name)")
            #expect(first.bodyString == "hello", "\(name): body \(first.bodyString.debugDescription)")
            let second = try await client.readResponse()
            #expect(second.status == 200, "\(name): got \(second.status): \(second.bodyString)")
            #expect(second.bodyString == "fresh 2.0", "\(name): the pipelined request got \(second.bodyString.debugDescription)")
        }
    }

    // MARK: f. An app that closes kept-alive connections at random

    /// After each answer the app keeps the connection, closes it at once, or closes it a few
    /// milliseconds later (racing the proxy's next use of it). A stream of 60 sequential GETs on
    /// one client connection all succeed, each with its own answer.
    @Test func anAppThatClosesKeptAliveConnectionsAtRandomLosesNoGET() async throws {
        let script: RawScript = { request in
            guard request.isComplete else { return nil }
            let answer = rawResponse("answer for \(request.target ?? "?")")
            // Deterministic "random": the same choices on every run.
            let roll = (request.sequence &* 7919 &+ 13) % 5
            switch roll {
            case 0, 1: return [answer]
            case 2: return [answer, .close]
            default: return [answer, .delay(.milliseconds(Int64(1 + (request.sequence &* 31) % 15))), .close]
            }
        }
        try await ProxyHarness.with(rawBackend: script, configuration: "[defaults.breaker]\nfailure_threshold = 1000\n") { proxy, app in
            let client = try await proxy.connect()
            var failures: [String] = []
            for index in 0..<60 {
                try await client.send(get("/r/\(index)"))
                let response = try await client.readResponse()
                if response.status != 200 || response.bodyString != "answer for /r/\(index)" {
                    failures.append("#\(index): \(response.status) \(response.bodyString)")
                }
            }
            #expect(failures.isEmpty, "\(failures.count) of 60 failed: \(failures.prefix(5))")
            // Requests that reached a connection the app was about to close (sent in the race):
            // the case the test is about; each was sent again on a new connection.
            let raced = app.connections.map { $0.receivedText.components(separatedBy: "GET ").count - 1 - $0.requestLines.count }.reduce(0, +)
            #expect(raced >= 1, "no request ever met a closing connection: the race was not exercised")
            #expect(app.connectionsAccepted > 10, "the app closed connections, yet only \(app.connectionsAccepted) were opened")
            await client.close()
        }
    }

    // MARK: g. Slower and slower answers

    /// The app answers after 100, 300, 600, then 2,500 ms. With a 1 s route timeout the last is
    /// a 504 `upstream_timeout` after about 1 s, the client connection stays usable, and the
    /// timed-out app connection is dropped: the next request gets a fresh connection's answer,
    /// never the late one.
    /// An app that stops reading an upload has stalled it, not the client: after `body_timeout`
    /// the client gets 504 `upstream_timeout` (nginx's `proxy_send_timeout`) where it was cut
    /// as a client gone silent, and the breaker counts the app's failure.
    @Test func anAppThatStopsReadingAnUploadGets504() async throws {
        let script: RawScript = { _ in [.stopReading] }
        let configuration = "[defaults]\nbody_timeout = \"1s\"\n[defaults.breaker]\nfailure_threshold = 1\n"
        try await ProxyHarness.with(rawBackend: script, configuration: configuration) { proxy, app in
            let client = try await proxy.connect()
            try await client.send("PUT /upload HTTP/1.1\r\nHost: test\r\nContent-Length: \(9 * 1024 * 1024)\r\n\r\n")
            let piece = [UInt8](repeating: UInt8(ascii: "x"), count: 64 * 1024)
            let upload = Task {
                for _ in 0..<144 { try await client.send(piece) }
            }
            defer { upload.cancel() }
            let answer = try await client.readResponse(timeout: .seconds(15))
            #expect(answer.status == 504)
            #expect(answer.header("x-breakwater-reason") == "upstream_timeout")
            #expect(try await client.waitForClose(timeout: .seconds(5)), "the rest of the upload would be read as a request")
            #expect(try await proxy.request(get("/next")).header("x-breakwater-reason") == "breaker_open")
            #expect(app.connectionsAccepted == 1)
        }
    }

    @Test func slowerAndSlowerAnswersEndIn504AndTheConnectionIsNotReused() async throws {
        let delays: [Int64] = [100, 300, 600, 2500]
        let script: RawScript = { request in
            guard request.isComplete else { return nil }
            let delay = request.sequence < delays.count ? delays[request.sequence] : 10
            return [.delay(.milliseconds(delay)), rawResponse("answer \(request.sequence) on \(request.connection)")]
        }
        try await ProxyHarness.with(rawBackend: script, configuration: "[defaults]\ntimeout = \"1s\"\n" + Self.oneAttempt) { proxy, app in
            let client = try await proxy.connect()
            for index in 0..<3 {
                try await client.send(get("/slow/\(index)"))
                let response = try await client.readResponse()
                #expect(response.status == 200)
                #expect(response.bodyString == "answer \(index) on 1")
            }
            let started = ContinuousClock.now
            try await client.send(get("/slow/3"))
            let timedOut = try await client.readResponse()
            let elapsed = ContinuousClock.now - started
            #expect(timedOut.status == 504)
            #expect(timedOut.header("x-breakwater-reason") == "upstream_timeout")
            #expect(elapsed >= .milliseconds(900) && elapsed < .milliseconds(2400), "504 after \(elapsed)")
            // Same client connection; the next answer is a fresh connection's, not the late one.
            try await client.send(get("/slow/4"))
            let next = try await client.readResponse(timeout: .seconds(5))
            #expect(next.status == 200)
            #expect(next.bodyString == "answer 4 on 2", "got \(next.bodyString.debugDescription)")
            #expect(app.connection(1)?.requestLines.count == 4)
            try await eventually { app.connection(1)?.closed == true }
            // Once the late answer would have come, nothing of it reaches the client.
            try await Task.sleep(for: .milliseconds(1800))
            let stray = try? await client.readAvailable(timeout: .milliseconds(100))
            #expect(stray == nil, "late bytes reached the client: \(String(decoding: stray ?? [], as: UTF8.self).debugDescription)")
        }
    }
}
