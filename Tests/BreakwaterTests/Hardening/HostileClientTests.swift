@testable import Breakwater
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

/// Clients that try to hurt the proxy (issue #8): each gets a defined answer or a cut, the
/// proxy stays up, and a well-behaved client is served afterwards.
@Suite struct HostileClientTests {
    /// A well-behaved client on a new connection gets its answer.
    private static func expectServed(_ proxy: ProxyHarness, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let response = try await proxy.request(get("/status/200"))
        #expect(response.status == 200, "a fresh client was not served", sourceLocation: sourceLocation)
        #expect(response.bodyString == "status 200", sourceLocation: sourceLocation)
    }

    // MARK: 1. Thousands of headers

    private static let headerFloods: [(name: String, headers: [String])] = [
        // About 80 KB: over the default 32 KB `max_header_bytes` too.
        ("5,000 small headers", (0..<5000).map { "X-Header-\($0): v" }),
        // 25 KB: within `max_header_bytes`, so only a limit on the number of fields stops it
        // (Envoy's default is 100 headers, Apache's and Tomcat's 100; the app behind would
        // otherwise parse, store and maybe log 5,000 of them for every such request).
        ("5,000 tiny headers within max_header_bytes", Array(repeating: "x:y", count: 5000)),
    ]

    /// A head with thousands of headers: a 431 (or 400) and a close; the app never sees it.
    @Test(arguments: Self.headerFloods.indices)
    func thousandsOfHeadersAreRefusedAndNeverReachTheApp(index: Int) async throws {
        let (name, headers) = Self.headerFloods[index]
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            // The proxy may close while the head is still arriving: the write may fail then.
            try? await client.send(get("/headers", headers: headers))
            let response = try await client.readResponse()
            #expect(response.status == 431 || response.status == 400, "\(name): got \(response.status)")
            if response.status == 431 {
                #expect(response.header("x-breakwater-reason") == "header_too_large")
            }
            #expect(try await client.waitForClose(timeout: .seconds(3)), "\(name): connection left open")
            #expect(
                proxy.backend.requestsReceived.isEmpty,
                "\(name): the request reached the app with \(proxy.backend.requestsReceived.first?.headers.count ?? 0) headers"
            )
            try await Self.expectServed(proxy)
        }
    }

    // MARK: 2. Body slowloris

    /// A body announced as 1,000,000 bytes whose bytes come slower than `body_timeout`: the
    /// route's `body_timeout` (1 s) cuts the client, and the app connection that carried the
    /// half request is closed, never handed to the next request.
    @Test func aSlowlorisBodyIsCutByBodyTimeoutAndItsAppConnectionDropped() async throws {
        let script: RawScript = { request in
            guard request.isComplete else { return nil }  // the app waits for the whole body
            return [rawResponse("answer from connection \(request.connection)")]
        }
        try await ProxyHarness.with(rawBackend: script, configuration: "[defaults]\nbody_timeout = \"1s\"\n") { proxy, app in
            let client = try await proxy.connect()
            let started = ContinuousClock.now
            try await client.send("POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000\r\n\r\nx")
            // One byte every 1.5 s: each silence is longer than body_timeout.
            let trickle = Task {
                while !Task.isCancelled {
                    try await Task.sleep(for: .milliseconds(1500))
                    try await client.send("x")
                }
            }
            defer { trickle.cancel() }
            #expect(try await client.waitForClose(timeout: .seconds(8)), "the slow body was not cut")
            let elapsed = ContinuousClock.now - started
            #expect(elapsed >= .milliseconds(900) && elapsed < .seconds(5), "cut after \(elapsed)")
            // Whatever the client got, it is not a success.
            if let response = try? await client.readResponse(timeout: .milliseconds(100)) {
                #expect(response.status >= 400, "a cut upload was answered \(response.status)")
            }
            // The app connection caught mid-body is closed by the proxy ...
            try await eventually { app.connection(1)?.closed == true }
            #expect(app.connection(1)?.requestLines == ["POST /upload HTTP/1.1"])
            // ... and the next request goes out on a new one.
            let next = try await proxy.request(get("/after"))
            #expect(next.status == 200)
            #expect(next.bodyString == "answer from connection 2")
            #expect(app.connectionsAccepted == 2)
            #expect(app.connection(2)?.requestLines == ["GET /after HTTP/1.1"])
        }
    }

    /// A chunked upload the app starts answering before the body is in, whose body then turns
    /// malformed: too late for a 400, so the client is cut — and the exchange ends with it,
    /// closing its app connection and giving back its slot. The proxy has one slot here, so a
    /// slot kept by the cut exchange would refuse every later request.
    @Test func aBodyMalformedAfterTheAnswerBeganIsCutAndFreesItsSlot() async throws {
        let script: RawScript = { request in
            if request.requestLine?.hasPrefix("POST") == true {
                // Answers at once, streams one chunk, then goes quiet without reading on.
                return [.text("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"), .hang]
            }
            guard request.isComplete else { return nil }
            return [rawResponse("served")]
        }
        let configuration = "[concurrency]\nsoft_limit = 1\nhard_limit = 1\n"
        try await ProxyHarness.with(rawBackend: script, configuration: configuration) { proxy, app in
            let client = try await proxy.connect()
            try await client.send("POST /upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            let head = try await client.readResponseHead()
            #expect(head.status == 200)
            try await client.send("zz\r\nnot a chunk\r\n")
            #expect(try await client.waitForClose(), "the client was not cut")
            try await eventually { app.connection(1)?.closed == true }
            let next = try await proxy.request(get("/after"))
            #expect(next.status == 200, "after the cut: \(next.status) \(next.header("x-breakwater-reason") ?? "")")
            #expect(next.bodyString == "served")
        }
    }

    // MARK: 3. A pipelining client that never reads

    /// 2,000 pipelined requests for 1 MB each, and the client never reads a byte: the proxy
    /// must stop reading requests (and the app's answers) once the client's socket is full,
    /// instead of buffering 2 GB; other clients are still served meanwhile.
    @Test func aPipeliningClientThatNeverReadsIsNotBufferedWithoutBound() async throws {
        try await ProxyHarness.with { proxy in
            let hog = try await RawClient.connect(port: proxy.port, autoRead: false)
            let sent = 2000
            let burst = String(repeating: get("/bytes/1000000"), count: sent)
            let memoryBefore = residentMemoryBytes()
            let sending = Task { try? await hog.send(burst) }
            defer { sending.cancel() }
            // Until the flow to the app stops: the same count twice, half a second apart.
            var reached = 0
            try? await eventually(timeout: .seconds(20)) {
                let before = proxy.backend.requestCount(pathPrefix: "/bytes/")
                try await Task.sleep(for: .milliseconds(500))
                reached = proxy.backend.requestCount(pathPrefix: "/bytes/")
                return reached >= 1 && reached == before
            }
            #expect(reached >= 1, "the proxy did not start on the requests")
            // Socket buffers on loopback hold a few MB: a handful of 1 MB answers, not hundreds.
            #expect(reached < 100, "\(reached) of \(sent) requests reached the app while the client read nothing")
            try await Self.expectServed(proxy)
            // The proxy is not reading on either.
            try await Task.sleep(for: .milliseconds(500))
            let later = proxy.backend.requestCount(pathPrefix: "/bytes/")
            #expect(later <= reached + 2, "requests kept flowing to the app: \(reached) then \(later)")
            let growth = residentMemoryBytes() - memoryBefore
            #expect(growth < 300 * 1024 * 1024, "memory grew by \(growth / 1024 / 1024) MB")
            await hog.close()
            try await Self.expectServed(proxy)
        }
    }

    // MARK: 4. Half-close

    /// A client that shuts its sending side after its request (SHUT_WR) cannot be told from
    /// one that went away: both arrive as a FIN. Like nginx (`proxy_ignore_client_abort off`),
    /// the proxy takes it for gone, so a client that gave up frees its queue place and its app
    /// connection at once (the app sees the disconnect) instead of holding them to the timeout.
    /// Nothing leaks and the next client is served.
    @Test func aClientThatHalfClosesIsTakenForGoneAndFreesItsAppConnection() async throws {
        try await ProxyHarness.with { proxy in
            let (_, closed) = try await halfClosedExchange(port: proxy.port, request: get("/hang"), timeout: .seconds(5))
            #expect(closed, "the proxy kept the half-closed connection open")
            try await eventually { proxy.backend.openConnections == 0 }
            try await Self.expectServed(proxy)
        }
    }

    // MARK: 5. Pipelining flood

    /// 1,000 small GETs in one write: all 1,000 answered, in order, on the one connection.
    @Test func aThousandPipelinedRequestsAreAllAnsweredInOrder() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            let count = 1000
            try await client.send((0..<count).map { get("/echo?n=\($0)") }.joined())
            var outOfOrder: [Int] = []
            for index in 0..<count {
                let response = try await client.readResponse(timeout: .seconds(15))
                #expect(response.status == 200)
                if response.header("x-echo-uri") != "/echo?n=\(index)" {
                    outOfOrder.append(index)
                }
            }
            #expect(outOfOrder.isEmpty, "answers out of order at \(outOfOrder.prefix(10))")
            #expect(proxy.backend.requestCount(pathPrefix: "/echo") == count)
            // Nothing more: no extra response was written.
            #expect((try? await client.readAvailable(timeout: .milliseconds(200))) == nil)
            await client.close()
            try await Self.expectServed(proxy)
        }
    }

    // MARK: 6. Absolute-form target with a different Host

    /// `GET http://other.example/x` with `Host: a.example`. RFC 9112 §3.2.2: when the target is
    /// in absolute-form, a recipient MUST ignore the received Host and use the authority of the
    /// target; a proxy forwarding the request MUST replace Host with that authority. So the app
    /// must see one consistent authority, `other.example`: a Host of `other.example` and either
    /// the origin-form `/x` or the same absolute-form target — never `Host: a.example` beside a
    /// target naming `other.example` (the app and the proxy would disagree about which site the
    /// request is for: a cache-poisoning and routing-confusion vector).
    @Test func anAbsoluteFormTargetsAuthorityWinsOverHost() async throws {
        try await ProxyHarness.with { proxy in
            let response = try await proxy.request("GET http://other.example/headers HTTP/1.1\r\nHost: a.example\r\n\r\n")
            #expect(response.status == 200)
            let received = try #require(proxy.backend.requestsReceived.first)
            #expect(received.header("host") == "other.example", "the app saw Host \(received.header("host") ?? "none") for target \(received.uri)")
            if received.uri.hasPrefix("http://") || received.uri.hasPrefix("https://") {
                let authority = received.uri.split(separator: "/", omittingEmptySubsequences: true).dropFirst().first.map(String.init)
                #expect(authority == received.header("host"), "target \(received.uri) and Host \(received.header("host") ?? "none") disagree")
            } else {
                #expect(received.uri == "/headers")
            }
            #expect(proxy.backend.requestsReceived.filter { $0.header("host") == "a.example" }.isEmpty)
            try await Self.expectServed(proxy)
        }
    }

    // MARK: 7. Connection flood

    /// 100 connections against `max_connections = 20`: the 80 beyond the limit are closed at
    /// once, the 20 admitted are served, and once the flood goes away new clients are served.
    @Test func aConnectionFloodBeyondMaxConnectionsIsShedAndTheProxyRecovers() async throws {
        try await ProxyHarness.with(configuration: "[server]\nmax_connections = 20\n") { proxy in
            var clients: [RawClient] = []
            for _ in 0..<100 {
                clients.append(try await proxy.connect())
            }
            // Once the proxy has accepted them all, and shed those over the limit.
            let open = await RawClient.stillOpen(clients, settlingAt: 20)
            #expect(open.count == 20, "\(open.count) of 100 connections left open, expected 20")
            // The admitted ones are served.
            var served = 0
            for client in open {
                try? await client.send(get("/status/200"))
                if (try? await client.readResponse(timeout: .seconds(5)))?.status == 200 { served += 1 }
            }
            #expect(served == open.count, "\(served) of \(open.count) admitted connections served")
            // While the limit is full, one more is shed.
            let extra = try await proxy.connect()
            #expect(try await extra.waitForClose(timeout: .seconds(2)), "a connection over the limit stayed open")
            for client in clients {
                await client.close()
            }
            // The slots come back.
            try await eventually {
                let next = try await proxy.connect()
                defer { Task { await next.close() } }
                try? await next.send(get("/status/200"))
                return (try? await next.readResponse(timeout: .seconds(1)))?.status == 200
            }
            // And all of them: 20 at once again, once the proxy has seen the last ones go.
            try await eventually { proxy.proxy.clientConnections == 0 }
            var again: [RawClient] = []
            for _ in 0..<20 {
                again.append(try await proxy.connect())
            }
            try? await eventually { proxy.proxy.clientConnections == 20 }
            let stillOpen = await RawClient.stillOpen(again, settlingAt: 20).count
            #expect(stillOpen == 20, "only \(stillOpen) of 20 fresh connections admitted after the flood")
            for client in again {
                await client.close()
            }
        }
    }
}

// MARK: A half-closing client

/// Connects, sends `request`, shuts down the sending side (SHUT_WR), and collects what arrives
/// until the proxy closes or `timeout` runs out.
private func halfClosedExchange(port: Int, request: String, timeout: Duration) async throws -> (bytes: [UInt8], closed: Bool) {
    let inbox = NIOLockedValueBox(Inbox())
    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .channelOption(.allowRemoteHalfClosure, value: true)
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(InboxHandler(inbox: inbox))
            }
        }
        .connect(host: "127.0.0.1", port: port)
        .get()
    try await channel.writeAndFlush(ByteBuffer(string: request))
    try await channel.close(mode: .output)
    let deadline = ContinuousClock.now + timeout
    while !inbox.withLockedValue({ $0.closed }) && ContinuousClock.now < deadline {
        try await Task.sleep(for: .milliseconds(5))
    }
    try? await channel.close()
    return inbox.withLockedValue { ($0.bytes, $0.closed) }
}
