import Logging

/// What every connection of one configuration generation shares: immutable configuration and
/// the routes with their live policy state, so event loops read it without coordination.
final class ProxyShared: Sendable {
    let router: Router
    let routes: [Route]
    /// `[concurrency]`: every request passes it first.
    let concurrency: ConcurrencyGate
    let server: ServerConfig
    let logger: Logger

    init(configuration: ProxyConfig, logger: Logger) {
        self.router = Router(routes: configuration.routes)
        self.routes = configuration.routes.map(Route.init(configuration:))
        self.concurrency = ConcurrencyGate(configuration: configuration.concurrency)
        self.server = configuration.server
        self.logger = logger
    }

    /// The route for a request, with its policies.
    func route(method: String, uri: String) -> Route {
        self.routes[self.router.routeIndex(method: method, uri: uri)]
    }
}
