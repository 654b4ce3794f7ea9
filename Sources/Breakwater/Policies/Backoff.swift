/// Exponential backoff with full jitter (the AWS architecture blog's "full jitter"): the n-th
/// retry waits a uniformly random time up to `base × 2^(n-1)`, capped at `max`, so clients
/// that failed together do not come back together.
public struct Backoff: Sendable, Equatable {
    public let base: Duration
    public let max: Duration

    public init(base: Duration, max: Duration) {
        self.base = base
        self.max = max
    }

    /// The longest wait before retry number `retry` (1 for the first retry).
    public func ceiling(forRetry retry: Int) -> Duration {
        let doublings = Swift.min(Swift.max(retry - 1, 0), 30)
        let grown = self.base * (1 << doublings)
        return Swift.min(grown, self.max)
    }

    /// The wait before retry number `retry`, given a `random` number in [0, 1).
    public func delay(forRetry retry: Int, random: Double) -> Duration {
        self.ceiling(forRetry: retry) * Swift.min(Swift.max(random, 0), 1)
    }
}
