import Atomics
import NIOConcurrencyHelpers
import NIOCore

/// A configured route with its live policy state, shared by every event loop: one route's
/// trouble (its open breaker, its spent retry budget) never touches another's.
///
/// The breaker and budget sit behind locks held for a few arithmetic operations, never across
/// I/O, so they stay exact with `server.threads` > 1.
final class Route: Sendable {
    let configuration: RouteConfig
    let retryPolicy: RetryPolicy
    /// The route's bulkhead when it has one (`[route.concurrency]` or
    /// `[defaults.concurrency]`), then the proxy's `[concurrency]` limit: the order a request
    /// takes their slots in. A request waiting in the bulkhead holds none of the proxy's slots
    /// (requests forwarded to the app), or a slow route's queue would take them from every
    /// other route; it holds a place under the proxy's hard limit from admission
    /// (`ProxyExchange.passGates`).
    let gates: [ConcurrencyGate]
    let metrics: RouteMetrics
    /// `body_timeout`, `timeout` (all attempts together) and how long one attempt that a retry
    /// could follow waits for a response head, as the event loop's timers take them: converted
    /// once, not per request.
    let bodyTimeout: TimeAmount
    let timeout: TimeAmount
    let attemptTimeout: TimeAmount
    private let failureStatuses: StatusCodeSet
    private let breaker: NIOLockedValueBox<CircuitBreaker>
    /// False once a reload replaced this breaker with a fresh one: requests still finishing
    /// under it must not paint its state over the new breaker's in the shared metrics.
    private let breakerIsCurrent = ManagedAtomic(true)
    private let retryBudget: NIOLockedValueBox<RetryBudget>

    /// - Parameters:
    ///   - proxyLimit: the generation's `[concurrency]`, which every route's requests pass.
    ///   - previous: the route of the same name before a reload: its bulkhead carries on with
    ///     the new limits, and its breaker state and retry budget when their settings did not
    ///     change.
    init(configuration: RouteConfig, proxyLimit: ConcurrencyGate, metrics: ProxyMetrics, continuing previous: Route? = nil) {
        self.configuration = configuration
        self.metrics = previous?.metrics ?? RouteMetrics(route: configuration.name, metrics: metrics)
        self.retryPolicy = RetryPolicy(configuration: configuration.policy.retry, routeTimeout: configuration.policy.timeout)
        self.bodyTimeout = TimeAmount(configuration.policy.bodyTimeout)
        self.timeout = TimeAmount(configuration.policy.timeout)
        self.attemptTimeout = TimeAmount(self.retryPolicy.attemptTimeout)
        self.failureStatuses = StatusCodeSet(configuration.policy.breaker.failureStatuses)
        if let previous, previous.policy.breaker == configuration.policy.breaker {
            self.breaker = previous.breaker
        } else {
            let fresh = CircuitBreaker(configuration: configuration.policy.breaker)
            self.breaker = NIOLockedValueBox(fresh)
            if let previous {
                previous.breakerIsCurrent.store(false, ordering: .relaxed)
                if previous.breaker.withLockedValue({ $0.state.name }) != fresh.state.name {
                    // The old state went with the old settings: the gauge and the count follow.
                    self.metrics.recordBreakerTransition(to: fresh.state.name)
                }
            }
        }
        if let previous, previous.policy.retry.budget == configuration.policy.retry.budget {
            self.retryBudget = previous.retryBudget
        } else {
            self.retryBudget = NIOLockedValueBox(RetryBudget(ratio: configuration.policy.retry.budget))
        }
        if let bulkhead = configuration.policy.concurrency {
            self.gates = [.continuing(previous?.bulkhead, with: bulkhead), proxyLimit]
        } else {
            self.gates = [proxyLimit]
        }
    }

    /// The route's own limit, when it has one.
    var bulkhead: ConcurrencyGate? { self.gates.count > 1 ? self.gates[0] : nil }

    var name: String { self.configuration.name }
    var policy: RoutePolicy { self.configuration.policy }

    /// Asks the breaker whether a request (or a retry) may go to the app.
    func admit(now: PolicyInstant) -> CircuitBreaker.Admission {
        self.updatingBreaker { $0.admit(now: now) }
    }

    /// Tells the breaker how an admitted attempt went.
    func record(_ outcome: CircuitBreaker.Outcome, probe: CircuitBreaker.Probe?, now: PolicyInstant) {
        // Only a failure can open the breaker, and only an opening uses the jitter: the
        // system generator (a system call) stays off the success path.
        let jitter = outcome == .failure ? Double.random(in: 0.8..<1.2) : 1
        self.updatingBreaker { _ = $0.record(outcome, probe: probe, now: now, jitter: jitter) }
    }

    /// An admitted probe that ended without an outcome (the client left).
    func release(_ probe: CircuitBreaker.Probe) {
        self.breaker.withLockedValue { $0.release(probe) }
    }

    /// Whether `status` from the app counts as a failure for the breaker.
    func isFailure(status: Int) -> Bool {
        self.failureStatuses.contains(status)
    }

    func recordRequest(now: PolicyInstant) {
        self.retryBudget.withLockedValue { $0.recordRequest(now: now) }
    }

    func tryAcquireRetry(now: PolicyInstant) -> Bool {
        self.retryBudget.withLockedValue { $0.tryAcquireRetry(now: now) }
    }

    func hasRetryBudgetLeft(now: PolicyInstant) -> Bool {
        self.retryBudget.withLockedValue { $0.hasRetryLeft(now: now) }
    }

    /// Applies the breaker's recovery time as of `now`, for a scrape of the metrics: the gauge
    /// and the transitions counted then show the state the next request would meet.
    func advanceBreaker(now: PolicyInstant) {
        self.updatingBreaker { $0.advance(now: now) }
    }

    /// The breaker as of `now` (`advanceBreaker` first), for the admin listener.
    func breakerSnapshot(now: PolicyInstant) -> CircuitBreaker.Snapshot {
        self.updatingBreaker { breaker in
            breaker.advance(now: now)
            return breaker.snapshot(now: now)
        }
    }

    /// Closes the breaker, for `POST /admin/circuit-breakers/NAME/reset`.
    func resetBreaker() {
        self.updatingBreaker { $0.close() }
    }

    /// A reload removed the route: its breaker no longer shows in any state (an `open` left
    /// behind would keep the breaker alert firing until a restart), and requests still
    /// finishing under it cannot paint one back.
    func retire() {
        self.breakerIsCurrent.store(false, ordering: .relaxed)
        self.metrics.showBreaker(state: nil)
    }

    /// Runs `change` on the breaker and reports a change of state to the metrics.
    private func updatingBreaker<Result>(_ change: (inout CircuitBreaker) -> Result) -> Result {
        let (result, before, after) = self.breaker.withLockedValue { breaker in
            let before = breaker.state.name
            let result = change(&breaker)
            return (result, before, breaker.state.name)
        }
        if before != after && self.breakerIsCurrent.load(ordering: .relaxed) {
            self.metrics.recordBreakerTransition(to: after)
        }
        return result
    }
}
