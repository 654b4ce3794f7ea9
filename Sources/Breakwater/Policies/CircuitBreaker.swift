/// A route's circuit breaker: the classic closed → open → half-open machine.
///
/// - Closed: requests pass. It opens after `failure_threshold` consecutive failures, or when
///   failures reach `failure_rate` of the last `window` outcomes with at least
///   `minimum_requests` of them.
/// - Open: requests are refused at once, for the recovery time. That time starts at
///   `recovery_timeout`, doubles (with jitter, so a fleet of proxies does not probe in step)
///   each time a probe fails, up to `max_recovery_timeout`, and returns to the base once the
///   breaker closes.
/// - Half-open: up to `half_open_requests` probes at once; `success_threshold` successes close
///   it, one failure opens it again.
///
/// A plain value: no clock, no locks, no NIO. `Route` keeps it behind a lock shared by the
/// event loops.
public struct CircuitBreaker: Sendable {
    public enum State: Equatable, Sendable {
        case closed
        case open(until: PolicyInstant)
        case halfOpen

        /// As metrics and the admin listener name it.
        public var name: String {
            switch self {
            case .closed: "closed"
            case .open: "open"
            case .halfOpen: "half_open"
            }
        }
    }

    public enum Admission: Equatable, Sendable {
        /// Go ahead; a `probe` must be reported (or released) so the half-open slot frees up.
        case admitted(probe: Probe?)
        case rejected(retryAfter: Duration)
    }

    /// A half-open breaker's probe, and the half-open spell that let it through. Its news
    /// counts only in that spell: a probe still out when the spell ended (another probe failed
    /// and the breaker reopened, or an operator reset it) speaks of the app as it was then, and
    /// in a later spell would close the breaker on stale news or free a slot it never took.
    public struct Probe: Equatable, Sendable {
        fileprivate let spell: Int
    }

    public enum Outcome: Sendable {
        case success
        case failure
    }

    public let configuration: BreakerConfig
    public private(set) var state = State.closed
    /// The open spell the breaker would use next; grows while probes keep failing.
    public private(set) var recoveryTimeout: Duration
    private var consecutiveFailures = 0
    private var window: OutcomeWindow
    /// Counts the half-open spells, so that a probe's news reaches only its own.
    private var spell = 0
    private var probesInFlight = 0
    private var probeSuccesses = 0

    public init(configuration: BreakerConfig) {
        self.configuration = configuration
        self.recoveryTimeout = configuration.recoveryTimeout
        self.window = OutcomeWindow(capacity: configuration.window)
    }

    /// What the admin listener shows of a breaker.
    public struct Snapshot: Sendable, Equatable {
        public var state: String
        public var consecutiveFailures: Int
        public var windowRequests: Int
        public var windowFailures: Int
        /// While open: how long until it lets a probe through.
        public var probeIn: Duration?
        public var recoveryTimeout: Duration
    }

    public func snapshot(now: PolicyInstant) -> Snapshot {
        var probeIn: Duration?
        if case .open(let until) = self.state {
            probeIn = until.duration(since: now)
        }
        return Snapshot(
            state: self.state.name,
            consecutiveFailures: self.consecutiveFailures,
            windowRequests: self.window.count,
            windowFailures: self.window.failures,
            probeIn: probeIn,
            recoveryTimeout: self.recoveryTimeout
        )
    }

    /// Moves an open breaker to half-open once its recovery time has passed. The next request
    /// does it, and so does whoever looks (the admin listener, a scrape of the metrics): on an
    /// idle route they would otherwise show `open` long after a probe would go through.
    public mutating func advance(now: PolicyInstant) {
        guard case .open(let until) = self.state, now >= until else { return }
        self.state = .halfOpen
        self.spell += 1
        self.probesInFlight = 0
        self.probeSuccesses = 0
    }

    /// Whether a request may go to the app now.
    public mutating func admit(now: PolicyInstant) -> Admission {
        self.advance(now: now)
        if case .open(let until) = self.state {
            return .rejected(retryAfter: until.duration(since: now))
        }
        switch self.state {
        case .closed:
            return .admitted(probe: nil)
        case .halfOpen where self.probesInFlight < self.configuration.halfOpenRequests:
            self.probesInFlight += 1
            return .admitted(probe: Probe(spell: self.spell))
        case .halfOpen, .open:
            // Busy probing: the answer comes within one request's time.
            return .rejected(retryAfter: .seconds(1))
        }
    }

    /// Reports how an admitted request went. Returns the new state when it changed.
    ///
    /// - Parameter jitter: a factor around 1 applied to a grown recovery time.
    @discardableResult
    public mutating func record(_ outcome: Outcome, probe: Probe?, now: PolicyInstant, jitter: Double = 1) -> State? {
        switch self.state {
        case .closed:
            return self.recordClosed(outcome, now: now)
        case .halfOpen where probe?.spell == self.spell:
            self.probesInFlight -= 1
            switch outcome {
            case .success:
                self.probeSuccesses += 1
                guard self.probeSuccesses >= self.configuration.successThreshold else { return nil }
                self.close()
                return self.state
            case .failure:
                let doubled = min(self.recoveryTimeout * 2, self.configuration.maxRecoveryTimeout)
                self.recoveryTimeout = min(doubled * jitter, self.configuration.maxRecoveryTimeout)
                self.state = .open(until: now + self.recoveryTimeout)
                return self.state
            }
        case .halfOpen, .open:
            // A request admitted before the breaker opened, or a probe of an earlier spell:
            // its news is stale.
            return nil
        }
    }

    /// A probe that ended without telling anything (the client went away): frees its slot,
    /// if its spell is still the current one.
    public mutating func release(_ probe: Probe) {
        if case .halfOpen = self.state, probe.spell == self.spell {
            self.probesInFlight -= 1
        }
    }

    /// Closes the breaker, as a successful recovery or an operator's reset does.
    public mutating func close() {
        self.state = .closed
        self.recoveryTimeout = self.configuration.recoveryTimeout
        self.consecutiveFailures = 0
        self.window.removeAll()
        self.probesInFlight = 0
        self.probeSuccesses = 0
    }

    private mutating func recordClosed(_ outcome: Outcome, now: PolicyInstant) -> State? {
        self.window.append(outcome == .failure)
        switch outcome {
        case .success:
            self.consecutiveFailures = 0
            return nil
        case .failure:
            self.consecutiveFailures += 1
        }
        let tripsOnStreak = self.consecutiveFailures >= self.configuration.failureThreshold
        let tripsOnRate =
            self.window.count >= self.configuration.minimumRequests
            && Double(self.window.failures) >= self.configuration.failureRate * Double(self.window.count)
        guard tripsOnStreak || tripsOnRate else { return nil }
        self.state = .open(until: now + self.recoveryTimeout)
        self.consecutiveFailures = 0
        self.window.removeAll()
        return self.state
    }
}

/// The last `capacity` outcomes, as a ring, with a running count of failures.
struct OutcomeWindow: Sendable {
    private var outcomes: [Bool]
    private var next = 0
    private(set) var count = 0
    private(set) var failures = 0

    init(capacity: Int) {
        self.outcomes = Array(repeating: false, count: max(1, capacity))
    }

    mutating func append(_ isFailure: Bool) {
        if self.count == self.outcomes.count {
            if self.outcomes[self.next] { self.failures -= 1 }
        } else {
            self.count += 1
        }
        self.outcomes[self.next] = isFailure
        if isFailure { self.failures += 1 }
        self.next = (self.next + 1) % self.outcomes.count
    }

    mutating func removeAll() {
        self.next = 0
        self.count = 0
        self.failures = 0
    }
}
