import Testing

extension ProxyHarness {
    /// Runs `body` against a proxy whose route `/switchable` has an open breaker: it opened at
    /// its first failure (one attempt a request, the backend failing) and stays open for a
    /// minute, so every request to it is refused with 503 `breaker_open` before it reaches the
    /// app.
    static func withOpenBreaker(_ body: (ProxyHarness) async throws -> Void) async throws {
        let configuration = """
            [[route]]
            name = "switchable"
            path = "/switchable"
            [route.breaker]
            failure_threshold = 1
            recovery_timeout = "1m"
            [route.retry]
            attempts = 1
            """
        try await ProxyHarness.with(configuration: configuration) { proxy in
            proxy.backend.setFailing(true)
            #expect(try await proxy.request(get("/switchable")).status == 500)
            try await body(proxy)
        }
    }
}
