import NIOCore

extension ProxyHarness {
    /// Runs `body` against a proxy in front of a `RawBackend` that answers with `script`
    /// (`configuration` as in `with(configuration:)`). The harness's own fixture backend is
    /// started too, but the proxy never reaches it.
    static func with(
        rawBackend script: @escaping RawScript,
        configuration: String = "",
        _ body: (ProxyHarness, RawBackend) async throws -> Void
    ) async throws {
        let app = try await RawBackend.start(script)
        do {
            try await ProxyHarness.with(configuration: configuration, upstream: "127.0.0.1:\(app.port)") { proxy in
                try await body(proxy, app)
            }
        } catch {
            try? await app.shutdown()
            throw error
        }
        try await app.shutdown()
    }
}

/// A complete raw response with a Content-Length body.
func rawResponse(_ body: String, status: String = "200 OK", headers: [String] = []) -> RawStep {
    .text("HTTP/1.1 \(status)\r\nContent-Length: \(body.utf8.count)\r\n" + headers.map { $0 + "\r\n" }.joined() + "\r\n" + body)
}
