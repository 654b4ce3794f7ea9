import Logging
import NIOConcurrencyHelpers
import NIOPosix
import ServiceLifecycle

/// The proxy as a swift-service-lifecycle service: serves until a graceful shutdown (SIGTERM,
/// SIGINT or `POST /admin/drain`), then drains:
///
/// 1. `/health/ready` answers 503 at once, so load balancers stop sending;
/// 2. requests are still served for `drain.delay`, while they notice;
/// 3. the listener closes; keep-alive connections get `Connection: close` on their next
///    response and idle ones are closed;
/// 4. requests in flight (queued ones included) finish, for up to `drain.timeout`;
/// 5. `run` returns, and the process exits 0.
public final class ProxyService: Service, Sendable {
    private let configuration: NIOLockedValueBox<ProxyConfig>
    private let lifecycle: Lifecycle
    private let logger: Logger
    private let server = NIOLockedValueBox<ProxyServer?>(nil)
    private let upstreams: UpstreamSet?

    /// - Parameter upstreams: the supervised workers; nil for the file's `upstream`.
    public init(configuration: ProxyConfig, upstreams: UpstreamSet? = nil, lifecycle: Lifecycle, logger: Logger) {
        self.configuration = NIOLockedValueBox(configuration)
        self.upstreams = upstreams
        self.lifecycle = lifecycle
        self.logger = logger
    }

    public func run() async throws {
        let configuration = self.configuration.withLockedValue { $0 }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.server.threads)
        do {
            try await self.serve(configuration, on: group)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        try await group.shutdownGracefully()
    }

    /// Everything the server holds is released before the group that runs it shuts down.
    private func serve(_ configuration: ProxyConfig, on group: MultiThreadedEventLoopGroup) async throws {
        let server = try await ProxyServer.start(
            configuration: configuration,
            eventLoopGroup: group,
            upstreams: self.upstreams,
            lifecycle: self.lifecycle,
            logger: self.logger
        )
        self.server.withLockedValue { $0 = server }
        defer { self.server.withLockedValue { $0 = nil } }
        self.logger.info(
            "listening",
            metadata: ["listen": "\(configuration.listen.host):\(server.port)", "upstream": "\(configuration.upstream.map { "\($0)" } ?? "-")"]
        )
        try? await gracefulShutdown()

        self.lifecycle.advance(to: .draining)
        let drain = self.configuration.withLockedValue { $0.drain }  // as last reloaded
        self.logger.notice("draining", metadata: ["delay": "\(drain.delay)", "timeout": "\(drain.timeout)"])
        if drain.delay > .zero {
            try? await Task.sleep(for: drain.delay)
        }
        let cut = try await server.shutdown(gracePeriod: drain.timeout)
        if cut > 0 {
            self.logger.warning("drain timed out; cutting requests still in flight", metadata: ["requests_cut": "\(cut)"])
        } else {
            self.logger.notice("drained")
        }
        // The access log lines of the last requests, which the drain waited for, go out
        // before the process does.
        if self.configuration.withLockedValue({ $0.log.access }) {
            await AccessLogWriter.standardOutput.flush(within: .seconds(2))
        }
    }

    /// Applies a reloaded file to new requests, all but what only a restart can change
    /// (`ProxyConfig.reloaded(with:)`). Returns the keys whose change was not applied, or nil
    /// when the proxy is not serving.
    public func reload(_ file: ProxyConfig) -> [String]? {
        guard let server = self.server.withLockedValue({ $0 }) else { return nil }
        return self.configuration.withLockedValue { running in
            let needsRestart = running.keysNeedingRestart(toApply: file)
            running = running.reloaded(with: file)
            server.reload(configuration: running)
            return needsRestart
        }
    }

    /// The routes of the current generation, for the admin listener.
    var routes: [Route] {
        self.server.withLockedValue { $0 }?.routes ?? []
    }
}
