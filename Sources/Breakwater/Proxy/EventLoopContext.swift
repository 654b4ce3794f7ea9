import CoreMetrics
import NIOCore

/// What one event loop owns: a connection pool to each instance of the app, and a cache of
/// metric handles. Only its own event loop touches it, so neither needs a lock: a request's
/// counters are found in a dictionary of this loop's own, and incremented atomically.
final class EventLoopContext {
    let eventLoop: any EventLoop
    let upstreams: UpstreamSet
    let pools: [UpstreamConnectionPool]
    /// What heads are written into: NIO's default, which every channel on the loop uses too
    /// (no bootstrap sets another), asked for without a trip through a channel.
    let allocator = ByteBufferAllocator()
    /// The time of the event being handled, for everything on this loop.
    let clock: EventClock
    /// Requests to the app held to the end of the loop's turn, for every pool on the loop.
    let upstreamFlushes: UpstreamFlushBatch
    /// Request and trace ids for this loop's requests.
    var identifiers = IdentifierGenerator()
    /// Each counter with the route it counts for, held so that the route's metrics object
    /// lives as long as its key: an `ObjectIdentifier` is unique only while its object lives,
    /// and a route removed by one reload and one added by a later reload could otherwise meet
    /// at one address, and one counter.
    private var requestCounters: [RequestCounterKey: (counter: CoreMetrics.Counter, route: RouteMetrics)] = [:]
    /// The counter used last, asked before the dictionary: a loop's requests mostly repeat the
    /// same route, method and outcome, and comparing a key costs less than hashing one.
    private var lastRequestCounter: (key: RequestCounterKey, counter: CoreMetrics.Counter)?

    private struct RequestCounterKey: Hashable {
        var route: ObjectIdentifier
        var method: String
        var code: Int
        var reason: String

        /// The route and the code only: equal keys still hash alike, the few labels sharing
        /// both are told apart by `==` (which for these short strings compares two words), and
        /// no string is hashed on every request.
        func hash(into hasher: inout Hasher) {
            hasher.combine(self.route)
            hasher.combine(self.code)
        }
    }

    init(eventLoop: any EventLoop, upstreams: UpstreamSet, configuration: UpstreamPoolConfig) {
        self.eventLoop = eventLoop
        self.upstreams = upstreams
        let clock = EventClock()
        self.clock = clock
        let flushes = UpstreamFlushBatch(eventLoop: eventLoop)
        self.upstreamFlushes = flushes
        self.pools = upstreams.members.map {
            UpstreamConnectionPool(eventLoop: eventLoop, clock: clock, flushes: flushes, target: $0.target, configuration: configuration)
        }
    }

    /// `breakwater_requests_total` for one label combination, made the first time this loop
    /// sees it.
    ///
    /// - Parameter method: one of a bounded set (`RouteMetrics.boundedMethod`).
    func requestCounter(_ route: RouteMetrics, method: String, code: Int, reason: String) -> CoreMetrics.Counter {
        let key = RequestCounterKey(route: ObjectIdentifier(route), method: method, code: code, reason: reason)
        if let last = self.lastRequestCounter, last.key == key {
            return last.counter
        }
        let counter: CoreMetrics.Counter
        if let known = self.requestCounters[key] {
            counter = known.counter
        } else {
            counter = route.makeRequestCounter(method: method, code: code, reason: reason)
            self.requestCounters[key] = (counter, route)
        }
        self.lastRequestCounter = (key, counter)
        return counter
    }

    func shutdown() {
        self.pools.forEach { $0.shutdown() }
    }
}
