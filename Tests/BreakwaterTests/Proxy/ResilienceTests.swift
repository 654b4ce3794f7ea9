import Foundation
import Testing

/// Per-route timeouts, breakers, retries and fallbacks, as a client and the app see them.
@Suite struct ResilienceTests {
    @Test func aSlowRouteTimesOutWhileAnotherIsUnharmed() async throws {
        let configuration = """
            [[route]]
            name = "slow"
            path = "/delay/3000"
            timeout = "300ms"
            """
        try await ProxyHarness.with(configuration: configuration) { proxy in
            async let other = proxy.request(get("/delay/600"))
            let started = ContinuousClock.now
            let slow = try await proxy.request(get("/delay/3000"))
            let elapsed = ContinuousClock.now - started
            #expect(slow.status == 504)
            #expect(slow.header("x-breakwater-reason") == "upstream_timeout")
            #expect(elapsed >= .milliseconds(280) && elapsed < .milliseconds(2000), "504 after \(elapsed)")
            let unharmed = try await other
            #expect(unharmed.status == 200)
            #expect(unharmed.bodyString == "delayed")
        }
    }

    /// `timeout` covers every attempt: a retry after a late 503 gets what is left of it, not a
    /// whole new one.
    @Test func aRetryWaitsOnlyForWhatIsLeftOfTheRouteTimeout() async throws {
        let configuration = """
            [defaults]
            timeout = "3s"
            [defaults.retry]
            backoff = "5ms"
            """
        try await ProxyHarness.with(configuration: configuration) { proxy in
            let started = ContinuousClock.now
            // A 503 after 2 s, then a retry the app never answers.
            let response = try await proxy.request(get("/flaky/late?fail=1&delay=2000&hang=1"))
            let elapsed = ContinuousClock.now - started
            #expect(response.status == 504)
            #expect(response.header("x-breakwater-reason") == "upstream_timeout")
            #expect(proxy.backend.requestCount(pathPrefix: "/flaky/late") == 2)
            // A fresh 3 s for the retry would answer at 5 s.
            #expect(elapsed >= .milliseconds(2900) && elapsed < .milliseconds(4500), "504 after \(elapsed)")
        }
    }

    /// When timeouts are retried, an attempt waits only for its share of `timeout`, so that a
    /// hung one leaves time for another. An attempt no retry could follow — a POST, or any
    /// request once the retry budget is spent — waits for the whole of it: cut at its share it
    /// would only fail sooner, and a slow app would see its answers thrown away.
    @Test func anAttemptNoRetryCouldFollowWaitsForTheWholeTimeout() async throws {
        let configuration = """
            [defaults]
            timeout = "3s"
            [defaults.retry]
            on = ["timeout", "503"]
            attempts = 3
            backoff = "5ms"
            [defaults.breaker]
            failure_threshold = 1000
            """
        try await ProxyHarness.with(configuration: configuration) { proxy in
            // A GET that a retry could follow waits for its 1 s share: the app's answer after
            // 2 s is cut off, and the retry gets "recovered".
            let shared = try await proxy.request(get("/flaky/share?fail=1&status=200&delay=2000"))
            #expect(shared.bodyString == "recovered", "the GET's first attempt was not cut at its share")
            #expect(proxy.backend.requestCount(pathPrefix: "/flaky/share") == 2)
            let started = ContinuousClock.now
            let post = try await proxy.request("POST /delay/1500 HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\n\r\nhi")
            #expect(post.status == 200, "POST: \(post.status) \(post.header("x-breakwater-reason") ?? "") after \(ContinuousClock.now - started)")
            #expect(post.bodyString == "delayed")
            // The budget's floor is 3 retries in 10 s: that retry and two of 503s spend it.
            for key in 0..<2 {
                #expect(try await proxy.request(get("/flaky/spend\(key)?fail=1")).status == 200)
            }
            let get = try await proxy.request(get("/delay/1500"))
            #expect(get.status == 200, "GET: \(get.status) \(get.header("x-breakwater-reason") ?? "")")
            #expect(proxy.backend.requestCount(pathPrefix: "/delay/1500") == 2, "one attempt each")
        }
    }

    /// TRACE is not among the methods retried (SPEC: GET, HEAD, OPTIONS, PUT, DELETE).
    @Test func aTraceRequestIsNotRetried() async throws {
        try await ProxyHarness.with(configuration: "[defaults.retry]\nbackoff = \"5ms\"\n") { proxy in
            let response = try await proxy.request("TRACE /flaky/trace HTTP/1.1\r\nHost: test\r\n\r\n")
            #expect(response.status == 503)
            #expect(proxy.backend.requestCount(pathPrefix: "/flaky/trace") == 1)
            // The same failure on a GET is retried, and recovers.
            #expect(try await proxy.request(get("/flaky/get")).status == 200)
            #expect(proxy.backend.requestCount(pathPrefix: "/flaky/get") == 2)
        }
    }

    /// An answer whose head came and whose body never did failed once: the breaker must not
    /// also count its head as a success, or failures in a row never add up (and a half-open
    /// breaker's probe would pass on a broken app).
    @Test func anAnswerCutBeforeItsBodyIsOneFailureForTheBreaker() async throws {
        let configuration = """
            [defaults.breaker]
            failure_threshold = 2
            [defaults.retry]
            attempts = 1
            """
        try await ProxyHarness.with(configuration: configuration) { proxy in
            for _ in 0..<2 {
                #expect(try await proxy.request(get("/head-only-then-close")).status == 502)
            }
            let refused = try await proxy.request(get("/status/200"))
            #expect(refused.status == 503)
            #expect(refused.header("x-breakwater-reason") == "breaker_open")
        }
    }

    @Test func aFailingRouteOpensItsBreakerAndRecoversThroughHalfOpen() async throws {
        let configuration = """
            [[route]]
            name = "switchable"
            path = "/switchable"
            [route.breaker]
            failure_threshold = 3
            recovery_timeout = "3s"
            success_threshold = 1
            [route.retry]
            attempts = 1
            """
        try await ProxyHarness.with(configuration: configuration) { proxy in
            proxy.backend.setFailing(true)
            for _ in 0..<3 {
                let response = try await proxy.request(get("/switchable"))
                #expect(response.status == 500)
                #expect(response.header("x-breakwater-reason") == nil)
            }
            for _ in 0..<5 {
                let refused = try await proxy.request(get("/switchable"))
                #expect(refused.status == 503)
                #expect(refused.header("x-breakwater-reason") == "breaker_open")
                #expect((1...3).contains(Int(refused.header("retry-after") ?? "") ?? 0))
            }
            #expect(proxy.backend.requestCount(pathPrefix: "/switchable") == 3)
            // Other routes are untouched.
            #expect(try await proxy.request(get("/status/200")).status == 200)

            proxy.backend.setFailing(false)
            try await Task.sleep(for: .milliseconds(3100))
            let probe = try await proxy.request(get("/switchable"))
            #expect(probe.status == 200)
            for _ in 0..<3 {
                #expect(try await proxy.request(get("/switchable")).status == 200)
            }
            #expect(proxy.backend.requestCount(pathPrefix: "/switchable") == 7)
        }
    }

    @Test func aFlakyGetSucceedsThroughRetriesWhileAPostReachesTheAppOnce() async throws {
        let configuration = """
            [defaults.retry]
            attempts = 3
            backoff = "10ms"
            max_backoff = "50ms"
            on = ["503"]
            """
        try await ProxyHarness.with(configuration: configuration) { proxy in
            let get = try await proxy.request(get("/flaky/get?fail=2"))
            #expect(get.status == 200)
            #expect(get.bodyString == "recovered")
            #expect(proxy.backend.requestCount(pathPrefix: "/flaky/get") == 3)

            let post = try await proxy.request("POST /flaky/post?fail=2 HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\n\r\nping")
            #expect(post.status == 503)
            #expect(post.bodyString == "failure 1")
            #expect(post.header("x-breakwater-reason") == nil)
            #expect(proxy.backend.requestCount(pathPrefix: "/flaky/post") == 1)
        }
    }

    @Test func theRetryBudgetCapsTheLoadOnAnAppThatAlwaysFails() async throws {
        let configuration = """
            [defaults.breaker]
            failure_threshold = 1000
            window = 1000
            minimum_requests = 1000
            [defaults.retry]
            attempts = 3
            backoff = "1ms"
            max_backoff = "5ms"
            on = ["503"]
            budget = 0.2
            """
        try await ProxyHarness.with(configuration: configuration) { proxy in
            let client = try await proxy.connect()
            for _ in 0..<100 {
                try await client.send(get("/status/503"))
                #expect(try await client.readResponse().status == 503)
            }
            let reached = proxy.backend.requestCount(pathPrefix: "/status/503")
            #expect(reached >= 100 && reached <= 125, "the app saw \(reached) requests")
            await client.close()
        }
    }

    @Test func theFallbackIsServedWhileTheBreakerIsOpen() async throws {
        let configuration = """
            [[route]]
            name = "switchable"
            path = "/switchable"
            [route.breaker]
            failure_threshold = 2
            recovery_timeout = "1m"
            [route.retry]
            attempts = 1
            [route.fallback]
            status = 200
            content_type = "text/plain"
            body = "cached answer"
            """
        try await ProxyHarness.with(configuration: configuration) { proxy in
            proxy.backend.setFailing(true)
            for _ in 0..<2 {
                #expect(try await proxy.request(get("/switchable")).status == 500)
            }
            let fallback = try await proxy.request(get("/switchable"))
            #expect(fallback.status == 200)
            #expect(fallback.header("content-type") == "text/plain")
            #expect(fallback.bodyString == "cached answer")
            #expect(fallback.header("x-breakwater-reason") == "breaker_open")
            #expect(proxy.backend.requestCount(pathPrefix: "/switchable") == 2)
        }
    }

    /// A half-open breaker lets one probe through. A probe that ends without an outcome — here
    /// refused for its body's size before the app could answer — hands its turn back: the next
    /// request probes instead, and the route recovers rather than answer `breaker_open` until
    /// someone resets it.
    @Test func aProbeThatEndsWithoutAnOutcomeHandsItsTurnBack() async throws {
        let configuration = """
            [server]
            max_body_bytes = 1000
            [[route]]
            name = "switchable"
            path = "/switchable"
            [route.breaker]
            failure_threshold = 1
            recovery_timeout = "2s"
            success_threshold = 1
            [route.retry]
            attempts = 1
            """
        try await ProxyHarness.with(configuration: configuration) { proxy in
            proxy.backend.setFailing(true)
            #expect(try await proxy.request(get("/switchable")).status == 500)
            #expect(try await proxy.request(get("/switchable")).header("x-breakwater-reason") == "breaker_open")
            proxy.backend.setFailing(false)
            try await Task.sleep(for: .milliseconds(2100))

            // The probe: its head reaches the app, which waits for the body's end; the body
            // goes over max_body_bytes first.
            let upload = try await proxy.connect()
            try await upload.send("POST /switchable HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
            try await upload.send("7d0\r\n" + String(repeating: "x", count: 2000) + "\r\n")
            let refused = try await upload.readResponse()
            #expect(refused.status == 413)
            await upload.close()

            let next = try await proxy.request(get("/switchable"))
            #expect(next.status == 200, "after the probe: \(next.status) \(next.header("x-breakwater-reason") ?? "")")
        }
    }
}
