/// Whether, and after how long, a failed attempt is tried again: the route's `[route.retry]`
/// rules that depend only on the request and the failure. The shared parts of the decision —
/// the retry budget and the breaker — are asked by the data path afterwards.
public struct RetryPolicy: Sendable {
    /// How an attempt failed.
    public enum Failure: Equatable, Sendable {
        /// No connection: the request never reached the app.
        case connectFailure
        /// The connection closed or broke before a response head.
        case reset
        /// No response head within the attempt's time.
        case timeout
        /// The app answered with a status listed in `on`.
        case status(Int)
        /// The app answered in bytes no HTTP reader takes, or with a head that cannot be passed
        /// on. Asked again it would most likely answer the same, so this is never retried
        /// (nginx leaves `invalid_header` out of `proxy_next_upstream`'s default too).
        case malformedResponse

        /// The `on` condition that retries it; none for a malformed response.
        var condition: RetryCondition? {
            switch self {
            case .connectFailure: .connectFailure
            case .reset: .reset
            case .timeout: .timeout
            case .status(let code): .status(code)
            case .malformedResponse: nil
            }
        }
    }

    public let configuration: RetryConfig
    public let routeTimeout: Duration
    /// How long one attempt may wait for a response head when a timeout could be retried after
    /// it (`mayRetry`). The route's `timeout` covers all attempts (Envoy's rule); when timeouts
    /// are retried, each attempt gets an equal share of it, or a hung first attempt would leave
    /// no time for a second. An attempt nothing could follow waits for what is left of
    /// `timeout`: cut at its share, it would only fail sooner.
    public let attemptTimeout: Duration
    private let backoff: Backoff
    /// The statuses in `on`, asked of every response.
    private let retriedStatuses: StatusCodeSet

    public init(configuration: RetryConfig, routeTimeout: Duration) {
        self.configuration = configuration
        self.routeTimeout = routeTimeout
        self.attemptTimeout = configuration.on.contains(.timeout) ? routeTimeout / configuration.attempts : routeTimeout
        self.backoff = Backoff(base: configuration.backoff, max: configuration.maxBackoff)
        self.retriedStatuses = StatusCodeSet(configuration.on.compactMap { if case .status(let code) = $0 { code } else { nil } })
    }

    /// Whether a response with `status` is one to retry rather than pass on.
    public func retries(status: Int) -> Bool {
        self.configuration.attempts > 1 && self.retriedStatuses.contains(status)
    }

    /// The wait before the next attempt, or nil when this failure ends the request.
    ///
    /// - Parameters:
    ///   - attemptsMade: attempts so far, the failed one included.
    ///   - isIdempotent: the method may be sent twice; otherwise only a request that never
    ///     reached the app (a connect failure) is retried.
    ///   - bodyReplayable: the whole body sent so far is still held.
    ///   - elapsed: time since the whole request first reached the app, where `timeout`
    ///     starts; no retry may begin after it.
    ///   - random: a number in [0, 1) for the backoff's jitter.
    public func delayBeforeRetry(
        after failure: Failure,
        attemptsMade: Int,
        isIdempotent: Bool,
        bodyReplayable: Bool,
        elapsed: Duration,
        random: Double
    ) -> Duration? {
        guard self.mayRetry(failure, attemptsMade: attemptsMade, isIdempotent: isIdempotent, bodyReplayable: bodyReplayable) else {
            return nil
        }
        let delay = self.backoff.delay(forRetry: attemptsMade, random: random)
        guard elapsed + delay < self.routeTimeout else {
            return nil
        }
        return delay
    }

    /// Whether `failure` of an attempt would be retried by the route's rules, time aside.
    ///
    /// - Parameters:
    ///   - attemptsMade: attempts so far, the one in question included.
    ///   - isIdempotent: the method may be sent twice; otherwise only a request that never
    ///     reached the app (a connect failure) is retried.
    ///   - bodyReplayable: the whole body sent so far is still held.
    public func mayRetry(_ failure: Failure, attemptsMade: Int, isIdempotent: Bool, bodyReplayable: Bool) -> Bool {
        guard attemptsMade < self.configuration.attempts, let condition = failure.condition, self.configuration.on.contains(condition) else {
            return false
        }
        return failure == .connectFailure || (isIdempotent && bodyReplayable)
    }
}
