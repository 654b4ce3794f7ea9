import Logging

/// What every connection of one configuration generation shares: immutable, so event loops
/// read it without coordination. (A reload will build a new one for new connections.)
final class ProxyShared: Sendable {
    let router: Router
    let server: ServerConfig
    let logger: Logger

    init(configuration: ProxyConfig, logger: Logger) {
        self.router = Router(routes: configuration.routes)
        self.server = configuration.server
        self.logger = logger
    }
}
