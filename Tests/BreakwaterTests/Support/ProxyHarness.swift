@testable import Breakwater
import Logging
import NIOCore

/// A proxy in front of a backend fixture, both on 127.0.0.1 with ports the system picks.
struct ProxyHarness {
    let proxy: ProxyServer
    let backend: BackendFixture
    let lifecycle: Lifecycle

    var port: Int { self.proxy.port }

    /// Runs `body` against a fresh backend and a proxy configured with `configuration` (TOML
    /// appended after `listen` and `upstream`), and tears both down afterwards.
    static func with(
        configuration: String = "",
        upstream: String? = nil,
        backendSocketPath: String? = nil,
        lifecycle: Lifecycle = Lifecycle(appReadyAtStart: true),
        _ body: (ProxyHarness) async throws -> Void
    ) async throws {
        let backend = try await BackendFixture.start(unixSocketPath: backendSocketPath)
        let toml = """
            listen = "127.0.0.1:0"
            upstream = "\(upstream ?? backendSocketPath.map { "unix:\($0)" } ?? "127.0.0.1:\(backend.port)")"
            [admin]
            listen = "127.0.0.1:0"

            """ + configuration + (configuration.contains("[log]") ? "" : "\n[log]\naccess = false\n")
        let config = try ConfigLoader.parse(toml, fileName: "test.conf")
        var logger = Logger(label: "breakwater-test")
        logger.logLevel = .critical
        let proxy = try await ProxyServer.start(configuration: config, eventLoopGroup: .singleton, lifecycle: lifecycle, logger: logger)
        let harness = ProxyHarness(proxy: proxy, backend: backend, lifecycle: lifecycle)
        do {
            try await body(harness)
        } catch {
            _ = try? await proxy.shutdown(gracePeriod: .milliseconds(100))
            try? await backend.shutdown()
            throw error
        }
        try await proxy.shutdown(gracePeriod: .milliseconds(100))
        try await backend.shutdown()
    }

    func connect() async throws -> RawClient {
        try await RawClient.connect(port: self.port)
    }

    /// One request on a new connection.
    func request(_ raw: String) async throws -> RawResponse {
        try await RawClient.request(port: self.port, raw)
    }
}

/// A GET request head with `Host`.
func get(_ path: String, headers: [String] = []) -> String {
    "GET \(path) HTTP/1.1\r\nHost: test\r\n" + headers.map { $0 + "\r\n" }.joined() + "\r\n"
}
