import Logging
import NIOPosix
import ServiceLifecycle

/// Probes the app every `interval` and keeps the lifecycle's readiness up to date: requests
/// are held while the app is not ready and released the moment it is.
public struct ReadinessProber: Service {
    private let configuration: ReadinessConfig
    private let upstream: UpstreamAddress
    private let lifecycle: Lifecycle
    private let logger: Logger

    public init(configuration: ReadinessConfig, upstream: UpstreamAddress, lifecycle: Lifecycle, logger: Logger) {
        self.configuration = configuration
        self.upstream = upstream
        self.lifecycle = lifecycle
        self.logger = logger
    }

    public func run() async throws {
        let target = try self.upstream.resolve()
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        await cancelWhenGracefulShutdown {
            var tracker = ReadinessTracker(
                healthyThreshold: self.configuration.healthyThreshold,
                unhealthyThreshold: self.configuration.unhealthyThreshold
            )
            var statusLogged: Int?
            while !Task.isCancelled {
                let verdict = await HealthProbe.check(
                    target: target,
                    path: self.configuration.path,
                    timeout: self.configuration.timeout,
                    eventLoop: eventLoop
                )
                HealthProbe.log(verdict, path: self.configuration.path, lastLogged: &statusLogged, logger: self.logger)
                if let ready = tracker.record(healthy: verdict.isHealthy) {
                    self.lifecycle.setAppReady(ready)
                    self.logger.notice(ready ? "app ready" : "app not ready", metadata: ["probe": "GET \(self.configuration.path)"])
                }
                // A drain cancels the wait: that is the prober's normal end, not a failure of the
                // service group (which would turn a clean drain into exit status 1).
                do {
                    try await Task.sleep(for: self.configuration.interval)
                } catch {
                    return
                }
            }
        }
    }
}
