import Foundation
import NIOCore
import NIOPosix
import Testing

/// When the app fails, the client gets SPEC's answer or a clean cut, and broken upstream
/// connections are never reused.
@Suite struct UpstreamFailureTests {
    private static func expect502(_ response: RawResponse, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(response.status == 502, sourceLocation: sourceLocation)
        #expect(response.header("x-breakwater-reason") == "upstream_unavailable", sourceLocation: sourceLocation)
        #expect(response.bodyString.contains("upstream_unavailable"), sourceLocation: sourceLocation)
    }

    @Test func aRefusedConnectIs502() async throws {
        // A port that was just free: nothing listens there.
        let closedPort = try await {
            let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .bind(host: "127.0.0.1", port: 0).get()
            let port = channel.localAddress!.port!
            try await channel.close()
            return port
        }()
        try await ProxyHarness.with(upstream: "127.0.0.1:\(closedPort)") { proxy in
            let client = try await proxy.connect()
            try await client.send(get("/"))
            Self.expect502(try await client.readResponse())
            // A 502 to a complete request leaves the client connection usable.
            try await client.send(get("/"))
            Self.expect502(try await client.readResponse())
            await client.close()
        }
    }

    @Test func anAppThatClosesWithoutAnsweringIs502() async throws {
        try await ProxyHarness.with { proxy in
            Self.expect502(try await proxy.request(get("/close")))
        }
    }

    @Test func anAppThatResetsIs502() async throws {
        try await ProxyHarness.with { proxy in
            Self.expect502(try await proxy.request(get("/reset")))
        }
    }

    @Test func anAppThatBreaksMidBodyCutsTheClient() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send(get("/head-then-close?length=1000"))
            let head = try await client.readResponseHead()
            #expect(head.status == 200)
            #expect(head.header("content-length") == "1000")
            #expect(try await client.waitForClose())
            // The next client gets a fresh, working app connection.
            #expect(try await proxy.request(get("/status/200")).status == 200)
        }
    }

    @Test func anAppThatDiesBetweenItsHeadAndItsBodyIsRetried() async throws {
        try await ProxyHarness.with(configuration: "[defaults.retry]\nbackoff = \"5ms\"\n") { proxy in
            // The client has seen nothing when the app dies, so the GET goes out again; each
            // attempt meets the same death, and the last answer is a clean 502, not a cut.
            let response = try await proxy.request(get("/head-only-then-close"))
            Self.expect502(response)
            #expect(proxy.backend.requestCount(pathPrefix: "/head-only-then-close") == 3)
        }
    }

    @Test func anAppThatDoesNotAnswerInTimeIs504() async throws {
        try await ProxyHarness.with(configuration: "[defaults]\ntimeout = \"500ms\"\n") { proxy in
            let client = try await proxy.connect()
            let started = ContinuousClock.now
            try await client.send(get("/hang"))
            let response = try await client.readResponse()
            #expect(response.status == 504)
            #expect(response.header("x-breakwater-reason") == "upstream_timeout")
            #expect(ContinuousClock.now - started >= .milliseconds(450))
            // The timed-out app connection is discarded, the client's is fine.
            try await client.send(get("/status/200"))
            #expect(try await client.readResponse().status == 200)
            #expect(proxy.backend.connectionsAccepted == 2)
            await client.close()
        }
    }

    @Test func aClientThatLeavesMidRequestFreesItsAppConnection() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send(get("/hang"))
            try await eventually { proxy.backend.requestsReceived.count == 1 }
            await client.close()
            try await eventually { proxy.backend.openConnections == 0 }
        }
    }

    @Test func anIdempotentRequestOnAConnectionTheAppJustClosedGoesOutAgain() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send(get("/status/200"))
            #expect(try await client.readResponse().status == 200)
            // The pooled connection is reused, the app drops it, and a fresh one answers.
            try await client.send(get("/close-if-reused"))
            let response = try await client.readResponse()
            #expect(response.status == 200)
            #expect(response.bodyString == "fresh")
            #expect(proxy.backend.connectionsAccepted == 2)
            await client.close()
        }
    }

    /// The resend after a stale connection opens a new one: the app's keep-alive timeout that
    /// closed the first may be closing every connection parked beside it.
    @Test func theResendAfterAStaleConnectionGoesOutOnANewOne() async throws {
        try await ProxyHarness.with(configuration: "[defaults.retry]\nattempts = 1\n") { proxy in
            // Two connections parked in every event loop's pool (the harness serves on all of
            // the machine's loops, and spreads client connections evenly over them), each
            // having served a request.
            let parked = 2 * System.coreCount
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<parked {
                    group.addTask { try await proxy.request(get("/delay/300")).status }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(statuses == Array(repeating: 200, count: parked))
            #expect(proxy.backend.connectionsAccepted == parked)
            // The parked connection taken drops the request, and so would its sibling.
            let response = try await proxy.request(get("/close-if-reused"))
            #expect(response.status == 200)
            #expect(response.bodyString == "fresh")
            #expect(proxy.backend.connectionsAccepted == parked + 1)
        }
    }

    /// Once the app answered, even with a head it then dropped, the request reached it: only
    /// the route's retry rules may send it again, and `attempts = 1` sends it once.
    @Test func anAnswerTheAppDroppedIsNotSentAgainWhenRetriesAreOff() async throws {
        try await ProxyHarness.with(configuration: "[defaults.retry]\nattempts = 1\n") { proxy in
            let client = try await proxy.connect()
            try await client.send(get("/status/200"))
            #expect(try await client.readResponse().status == 200)
            // On the kept-alive connection: a head, then the app's close.
            try await client.send(get("/head-only-then-close"))
            Self.expect502(try await client.readResponse())
            #expect(proxy.backend.requestCount(pathPrefix: "/head-only-then-close") == 1)
            await client.close()
        }
    }

    @Test func aPostOnAConnectionTheAppJustClosedIsNotSentTwice() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send(get("/status/200"))
            #expect(try await client.readResponse().status == 200)
            try await client.send("POST /close-if-reused HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\nhi")
            Self.expect502(try await client.readResponse())
            #expect(proxy.backend.requestsReceived.filter { $0.method == "POST" }.count == 1)
            await client.close()
        }
    }
}
