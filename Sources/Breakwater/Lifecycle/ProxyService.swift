import Logging
import ServiceLifecycle

/// The proxy as a swift-service-lifecycle service: serves until a graceful shutdown (SIGTERM
/// or SIGINT), then stops accepting and lets requests in flight finish within `drain.timeout`.
public struct ProxyService: Service {
    private let configuration: ProxyConfig
    private let logger: Logger

    public init(configuration: ProxyConfig, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    public func run() async throws {
        let server = try await ProxyServer.start(configuration: self.configuration, logger: self.logger)
        self.logger.info(
            "listening",
            metadata: [
                "listen": "\(server.localAddress)",
                "upstream": "\(self.configuration.upstream.map { "\($0)" } ?? "-")",
            ]
        )
        try? await gracefulShutdown()
        self.logger.info("shutting down", metadata: ["grace_period": "\(self.configuration.drain.timeout)"])
        try await server.shutdown(gracePeriod: self.configuration.drain.timeout)
    }
}
