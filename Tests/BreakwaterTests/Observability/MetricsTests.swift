@testable import Breakwater
import Foundation
import NIOEmbedded
import NIOHTTP1
import Testing

/// `/metrics` after traffic, as Prometheus would scrape it.
@Suite struct MetricsTests {
    private static func lines(_ exposition: String, _ prefix: String) -> [Substring] {
        exposition.split(separator: "\n").filter { $0.hasPrefix(prefix) }
    }

    /// The route `flaky`, on the fixture's `/switchable` (500 while the test sets it failing),
    /// with a breaker that opens after `failureThreshold` failures in a row.
    private static func flakyRoute(failureThreshold: Int, breaker: String = "", retry: String = "attempts = 1") -> String {
        "[[route]]\nname = \"flaky\"\npath = \"/switchable\"\n[route.breaker]\nfailure_threshold = \(failureThreshold)\n\(breaker)"
            + "[route.retry]\n\(retry)\n"
    }

    @Test func requestsAreCountedByRouteMethodCodeAndReason() async throws {
        let configuration = "[[route]]\nname = \"api\"\npath_prefix = \"/status/\"\n"
        try await ProxyHarness.with(configuration: configuration) { proxy in
            for _ in 0..<3 { _ = try await proxy.request(get("/status/201")) }
            _ = try await proxy.request("PROPFIND /status/200 HTTP/1.1\r\nHost: x\r\n\r\n")
            _ = try await proxy.request(get("/hello"))
            let text = proxy.lifecycle.metrics.exposition()
            #expect(text.contains(#"breakwater_requests_total{route="api",method="GET",code="201",reason="ok"} 3"#), "\(text)")
            #expect(text.contains(#"breakwater_requests_total{route="api",method="OTHER",code="200",reason="ok"} 1"#))
            #expect(text.contains(#"breakwater_requests_total{route="default",method="GET",code="200",reason="ok"} 1"#))
            #expect(text.contains("# TYPE breakwater_requests_total counter"))
            #expect(text.contains("# TYPE breakwater_request_duration_seconds histogram"))
            #expect(text.contains(#"breakwater_request_duration_seconds_bucket{route="api",le="0.001"}"#))
            #expect(text.contains(#"breakwater_request_duration_seconds_bucket{route="api",le="30.0"} 4"#))
            #expect(text.contains(#"breakwater_request_duration_seconds_count{route="api"} 4"#))
            #expect(text.contains(#"breakwater_in_flight_requests{route="api"} 0.0"#))
            #expect(text.contains("process_resident_memory_bytes"))
            #expect(text.contains("process_open_fds"))
        }
    }

    /// Requests refused before their head could be read have no method or route of their own,
    /// but a scan or an attack must still show: they count on the route `default` with the
    /// method `OTHER`, and their time from the head's first byte goes into the histogram (a
    /// slow head's 408 comes after a second, not at 0). A connection that never sent a byte is
    /// no request, and does not count.
    @Test func requestsRefusedBeforeTheirHeadIsReadAreCounted() async throws {
        let configuration = "[server]\nheader_read_timeout = \"1s\"\nmax_header_bytes = \"4KB\"\n"
        try await ProxyHarness.with(configuration: configuration) { proxy in
            #expect(try await proxy.request("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n").status == 400)
            #expect(try await proxy.request("GET /\u{1} HTTP/1.1\r\nHost: x\r\n\r\n").status == 400)
            #expect(try await proxy.request(get("/", headers: ["X-Big: " + String(repeating: "a", count: 8000)])).status == 431)
            let slow = try await proxy.connect()
            try await slow.send("GET / HTTP/1.1\r\nHo")
            #expect(try await slow.readResponse(timeout: .seconds(10)).status == 408)
            let silent = try await proxy.connect()
            #expect(try await silent.waitForClose(timeout: .seconds(10)), "an empty connection was kept past the header timeout")
            let text = proxy.lifecycle.metrics.exposition()
            #expect(text.contains(#"breakwater_requests_total{route="default",method="OTHER",code="400",reason="bad_request"} 2"#), "\(text)")
            #expect(text.contains(#"breakwater_requests_total{route="default",method="OTHER",code="431",reason="header_too_large"} 1"#))
            #expect(text.contains(#"breakwater_requests_total{route="default",method="OTHER",code="408",reason="header_timeout"} 1"#))
            #expect(text.contains(#"breakwater_request_duration_seconds_count{route="default"} 4"#))
            #expect(text.contains(#"breakwater_request_duration_seconds_bucket{route="default",le="0.5"} 3"#))
            #expect(proxy.backend.requestsReceived.isEmpty)
            await slow.close()
            await silent.close()
        }
    }

    @Test func breakerStatesTransitionsShedsAndTimeoutsShow() async throws {
        let configuration = Self.flakyRoute(failureThreshold: 2) + """
            [[route]]
            name = "slow"
            path = "/hang"
            timeout = "100ms"
            """
        try await ProxyHarness.with(configuration: configuration) { proxy in
            proxy.backend.setFailing(true)
            for _ in 0..<3 { _ = try await proxy.request(get("/switchable")) }
            _ = try await proxy.request(get("/hang"))
            let text = proxy.lifecycle.metrics.exposition()
            #expect(text.contains(#"breakwater_circuit_breaker_state{route="flaky",state="open"} 1.0"#), "\(text)")
            #expect(text.contains(#"breakwater_circuit_breaker_state{route="flaky",state="closed"} 0.0"#))
            #expect(text.contains(#"breakwater_circuit_breaker_transitions_total{route="flaky",to="open"} 1"#))
            #expect(text.contains(#"breakwater_shed_total{route="flaky",reason="breaker_open"} 1"#))
            #expect(text.contains(#"breakwater_requests_total{route="flaky",method="GET",code="503",reason="breaker_open"} 1"#))
            #expect(text.contains(#"breakwater_requests_total{route="flaky",method="GET",code="500",reason="ok"} 2"#))
            #expect(text.contains(#"breakwater_upstream_timeouts_total{route="slow"} 1"#))
            #expect(text.contains("breakwater_upstream_ready 1.0"))
            #expect(text.contains("breakwater_draining 0.0"))
        }
    }

    /// A breaker whose recovery time has passed shows half-open at the next scrape, as it does
    /// in `/health/circuit-breakers`, without waiting for a request to move it.
    @Test func anIdleBreakerShowsHalfOpenOnceItsRecoveryTimeHasPassed() async throws {
        let configuration = Self.flakyRoute(failureThreshold: 1, breaker: "recovery_timeout = \"200ms\"\n")
        try await ProxyHarness.with(configuration: configuration) { proxy in
            proxy.backend.setFailing(true)
            _ = try await proxy.request(get("/switchable"))
            try await Task.sleep(for: .milliseconds(400))
            let admin = AdminEndpoints(lifecycle: proxy.lifecycle, routes: { [server = proxy.proxy] in server.routes }, tokenEnv: "UNSET")
            let text = admin.answer(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/metrics")).body
            #expect(text.contains(#"breakwater_circuit_breaker_state{route="flaky",state="half_open"} 1.0"#), "\(text)")
            #expect(text.contains(#"breakwater_circuit_breaker_state{route="flaky",state="open"} 0.0"#))
            #expect(text.contains(#"breakwater_circuit_breaker_transitions_total{route="flaky",to="half_open"} 1"#))
        }
    }

    /// A retry is counted when it goes out. One that the breaker stops during its backoff (it
    /// opened on the attempt that failed) never reaches the app, and is not a retry.
    @Test func aRetryTheBreakerStopsIsNotCounted() async throws {
        let configuration = Self.flakyRoute(failureThreshold: 1, retry: "attempts = 2\non = [\"500\"]")
        try await ProxyHarness.with(configuration: configuration) { proxy in
            proxy.backend.setFailing(true)
            let answer = try await proxy.request(get("/switchable"))
            #expect(answer.header("x-breakwater-reason") == "breaker_open")
            #expect(proxy.backend.requestsReceived.count == 1)
            let text = proxy.lifecycle.metrics.exposition()
            #expect(text.contains(#"breakwater_retries_total{route="flaky"} 0"#), "\(text)")
        }
    }

    /// A reload that changes a route's breaker settings starts it closed, and the gauge says so.
    @Test func aReloadThatResetsABreakerShowsItClosed() async throws {
        try await ProxyHarness.with(configuration: Self.flakyRoute(failureThreshold: 1)) { proxy in
            proxy.backend.setFailing(true)
            _ = try await proxy.request(get("/switchable"))
            #expect(proxy.lifecycle.metrics.exposition().contains(#"breakwater_circuit_breaker_state{route="flaky",state="open"} 1.0"#))
            let reloaded = try ConfigLoader.parse(
                "upstream = \"127.0.0.1:\(proxy.backend.port)\"\n" + Self.flakyRoute(failureThreshold: 5) + "[log]\naccess = false\n",
                fileName: "reloaded.conf"
            )
            proxy.proxy.reload(configuration: reloaded)
            let text = proxy.lifecycle.metrics.exposition()
            #expect(text.contains(#"breakwater_circuit_breaker_state{route="flaky",state="open"} 0.0"#), "\(text)")
            #expect(text.contains(#"breakwater_circuit_breaker_state{route="flaky",state="closed"} 1.0"#))
            #expect(text.contains(#"breakwater_circuit_breaker_transitions_total{route="flaky",to="closed"} 1"#))
        }
    }

    /// A reload that removes a route whose breaker is open takes it out of every state: an
    /// `open` left behind would keep the breaker alert firing until a restart.
    @Test func aReloadThatRemovesARouteClearsItsBreakerState() async throws {
        try await ProxyHarness.with(configuration: Self.flakyRoute(failureThreshold: 1)) { proxy in
            proxy.backend.setFailing(true)
            _ = try await proxy.request(get("/switchable"))
            #expect(proxy.lifecycle.metrics.exposition().contains(#"breakwater_circuit_breaker_state{route="flaky",state="open"} 1.0"#))
            let reloaded = try ConfigLoader.parse("upstream = \"127.0.0.1:\(proxy.backend.port)\"\n[log]\naccess = false\n", fileName: "reloaded.conf")
            proxy.proxy.reload(configuration: reloaded)
            let text = proxy.lifecycle.metrics.exposition()
            #expect(text.contains(#"breakwater_circuit_breaker_state{route="flaky",state="open"} 0.0"#), "\(text)")
            #expect(text.contains(#"breakwater_circuit_breaker_state{route="flaky",state="closed"} 0.0"#))
            #expect(text.contains(#"breakwater_circuit_breaker_state{route="flaky",state="half_open"} 0.0"#))
        }
    }

    /// A client that leaves while an answer it never got is being retried is counted as gone
    /// (499), not under the status of the answer that was dropped for the retry.
    @Test func aClientThatLeavesDuringARetryIsCountedAsGoneNotAsTheDroppedAnswer() async throws {
        try await ProxyHarness.with(configuration: "[defaults.retry]\nbackoff = \"3s\"\nmax_backoff = \"3s\"\n") { proxy in
            let client = try await proxy.connect()
            try await client.send(get("/status/503"))
            // The retry waits up to 3 s (full jitter): the client leaves during it, or during
            // the attempt after it.
            try await eventually { proxy.backend.requestCount(pathPrefix: "/status/503") >= 1 }
            await client.close()
            let counted = #"breakwater_requests_total{route="default",method="GET",code="499",reason="client_closed"} 1"#
            try await eventually { proxy.lifecycle.metrics.exposition().contains(counted) }
            #expect(!proxy.lifecycle.metrics.exposition().contains(#"code="503""#))
        }
    }

    /// Each event loop caches its request counters for good, across reloads: a route added
    /// after another was removed must count under its own name, even where its metrics object
    /// is made at the address the removed one's had.
    @Test func aRouteMadeWhereARemovedOneWasCountsUnderItsOwnName() throws {
        let metrics = ProxyMetrics()
        let upstreams = try UpstreamSet(addresses: [.tcp(HostPort(host: "127.0.0.1", port: 1))], supervised: false)
        let context = EventLoopContext(eventLoop: EmbeddedEventLoop(), upstreams: upstreams, configuration: UpstreamPoolConfig())
        for index in 0..<50 {
            // Each route goes once counted, as a reload removes it; the allocator hands its
            // memory to the next at once.
            let route = RouteMetrics(route: "route-\(index)", metrics: metrics)
            let counter = context.requestCounter(route, method: "GET", code: 200, reason: "ok")
            #expect(counter.dimensions.contains { $0.0 == "route" && $0.1 == "route-\(index)" }, "\(counter.dimensions)")
        }
    }

    /// `breakwater_in_flight_requests` counts what is at the app now (SPEC): a request
    /// waiting out a retry's backoff is not, and is again once its retry goes.
    @Test func aRequestWaitingToBeRetriedIsNotInFlight() async throws {
        let configuration = "[defaults.retry]\nbackoff = \"4s\"\nmax_backoff = \"4s\"\nattempts = 2\n"
        try await ProxyHarness.with(configuration: configuration) { proxy in
            let inFlight = { (count: Int) in #"breakwater_in_flight_requests{route="default"} \#(count).0"# }
            let client = try await proxy.connect()
            try await client.send(get("/status/503"))
            try await eventually { proxy.backend.requestCount(pathPrefix: "/status/503") >= 1 }
            // The retry waits up to 4 s (full jitter); the app answers each try at once.
            #expect(proxy.lifecycle.metrics.exposition().contains(inFlight(0)), "\(proxy.lifecycle.metrics.exposition())")
            #expect(try await client.readResponse(timeout: .seconds(10)).status == 503)
            #expect(proxy.backend.requestCount(pathPrefix: "/status/503") == 2)
            await client.close()
        }
    }

    @Test func thePrometheusToolAcceptsTheExposition() async throws {
        guard let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"].first(where: FileManager.default.isExecutableFile(atPath:)) else {
            return  // `apt-get install prometheus` provides it; .ci/run installs it when it can.
        }
        try await ProxyHarness.with { proxy in
            _ = try await proxy.request(get("/status/200"))
            let process = Process()
            process.executableURL = URL(fileURLWithPath: promtool)
            process.arguments = ["check", "metrics"]
            let input = Pipe()
            let output = Pipe()
            process.standardInput = input
            process.standardOutput = output
            process.standardError = output
            try process.run()
            input.fileHandleForWriting.write(Data(proxy.lifecycle.metrics.exposition().utf8))
            try input.fileHandleForWriting.close()
            process.waitUntilExit()
            let report = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            // HELP texts are lints, not errors: swift-metrics has no place for them.
            let errors = report.split(separator: "\n").filter { !$0.contains("no help text") }
            #expect(errors.isEmpty, "\(report)")
        }
    }
}
