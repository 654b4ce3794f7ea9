import CoreMetrics
import NIOCore

/// What one event loop owns: a connection pool to each instance of the app, and a cache of
/// metric handles. Only its own event loop touches it, so neither needs a lock: a request's
/// counters are found in a dictionary of this loop's own, and incremented atomically.
final class EventLoopContext {
    let eventLoop: any EventLoop
    let upstreams: UpstreamSet
    let pools: [UpstreamConnectionPool]
    /// Request and trace ids for this loop's requests.
    var identifiers = IdentifierGenerator()
    private var requestCounters: [RequestCounterKey: CoreMetrics.Counter] = [:]

    private struct RequestCounterKey: Hashable {
        var route: ObjectIdentifier
        var method: String
        var code: Int
        var reason: String
    }

    init(eventLoop: any EventLoop, upstreams: UpstreamSet, configuration: UpstreamPoolConfig) {
        self.eventLoop = eventLoop
        self.upstreams = upstreams
        self.pools = upstreams.members.map { UpstreamConnectionPool(eventLoop: eventLoop, target: $0.target, configuration: configuration) }
    }

    /// `breakwater_requests_total` for one label combination, made the first time this loop
    /// sees it.
    func requestCounter(_ route: RouteMetrics, method: String, code: Int, reason: String) -> CoreMetrics.Counter {
        let method = RouteMetrics.boundedMethod(method)
        let key = RequestCounterKey(route: ObjectIdentifier(route), method: method, code: code, reason: reason)
        if let counter = self.requestCounters[key] {
            return counter
        }
        let counter = route.makeRequestCounter(method: method, code: code, reason: reason)
        self.requestCounters[key] = counter
        return counter
    }

    func shutdown() {
        self.pools.forEach { $0.shutdown() }
    }
}
