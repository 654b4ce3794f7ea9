import Logging
import NIOConcurrencyHelpers

/// What every connection of one configuration generation shares: immutable configuration and
/// the routes with their live policy state, so event loops read it without coordination.
final class ProxyShared: Sendable {
    let router: Router
    let routes: [Route]
    /// `[concurrency]`, which every route's requests pass (after their route's bulkhead).
    let proxyLimit: ConcurrencyGate
    let server: ServerConfig
    /// How long a request waits for the app to become ready; nil without `[readiness]`.
    let readinessHold: Duration?
    /// `readiness.public_path`, answered by the proxy itself on the public listener.
    let publicReadinessPath: String?
    let lifecycle: Lifecycle
    let trace: TraceConfig
    /// Where access log lines go; nil with `log.access = false`.
    let accessLog: AccessLogWriter?
    let logger: Logger

    /// - Parameter previous: the generation this one replaces on reload. Its limits carry on
    ///   with the new settings, the requests they hold still counted; a route that keeps its
    ///   name keeps its bulkhead the same way, and its breaker and retry budget.
    init(configuration: ProxyConfig, lifecycle: Lifecycle, logger: Logger, previous: ProxyShared? = nil) {
        self.router = Router(routes: configuration.routes)
        let proxyLimit = ConcurrencyGate.continuing(previous?.proxyLimit, with: configuration.concurrency)
        self.proxyLimit = proxyLimit
        self.routes = configuration.routes.map { route in
            Route(configuration: route, proxyLimit: proxyLimit, metrics: lifecycle.metrics, continuing: previous?.routes.first { $0.name == route.name })
        }
        for gone in previous?.routes ?? [] where !configuration.routes.contains(where: { $0.name == gone.name }) {
            gone.retire()
        }
        // A supervised app is not ready while it restarts, with or without a probe table.
        self.readinessHold = configuration.readiness?.hold ?? (configuration.app != nil ? ReadinessConfig().hold : nil)
        self.publicReadinessPath = configuration.readiness?.publicPath
        self.lifecycle = lifecycle
        self.trace = configuration.trace
        self.accessLog = configuration.log.access ? AccessLogWriter.standardOutput : nil
        self.server = configuration.server
        self.logger = logger
    }

    /// The route for a request, with its policies.
    func route(method: String, uri: String) -> Route {
        self.routes[self.router.routeIndex(method: method, uri: uri)]
    }
}

/// The generation new requests use; a reload swaps it, and requests already under way finish
/// under the one they started with.
final class CurrentGeneration: Sendable {
    private let box: NIOLockedValueBox<ProxyShared>

    init(_ shared: ProxyShared) {
        self.box = NIOLockedValueBox(shared)
    }

    var value: ProxyShared {
        get { self.box.withLockedValue { $0 } }
        set { self.box.withLockedValue { $0 = newValue } }
    }
}
