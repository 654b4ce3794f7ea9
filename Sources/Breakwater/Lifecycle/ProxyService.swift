import Logging
import NIOPosix
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
        let group = MultiThreadedEventLoopGroup(numberOfThreads: self.configuration.server.threads)
        do {
            try await self.serve(on: group)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        try await group.shutdownGracefully()
    }

    /// Everything the server holds is released before the group that runs it shuts down.
    private func serve(on group: MultiThreadedEventLoopGroup) async throws {
        let server = try await ProxyServer.start(configuration: self.configuration, eventLoopGroup: group, logger: self.logger)
        self.logger.info(
            "listening",
            metadata: [
                "listen": "\(self.configuration.listen.host):\(server.port)",
                "upstream": "\(self.configuration.upstream.map { "\($0)" } ?? "-")",
            ]
        )
        try? await gracefulShutdown()
        self.logger.info("shutting down", metadata: ["grace_period": "\(self.configuration.drain.timeout)"])
        try await server.shutdown(gracePeriod: self.configuration.drain.timeout)
    }
}
