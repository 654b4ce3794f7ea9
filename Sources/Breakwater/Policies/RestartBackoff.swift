/// How long to wait before restarting a crashed app: `restart_backoff`, doubled after each
/// crash that came soon after a start, up to a cap; back to the base once a run lasted. A
/// crash-looping app is restarted with growing delays, never in a tight loop.
public struct RestartBackoff: Sendable {
    public let base: Duration
    public let cap: Duration
    /// A run at least this long counts as healthy and resets the delay.
    public let stableAfter: Duration
    public private(set) var next: Duration

    public init(base: Duration, cap: Duration = .seconds(30), stableAfter: Duration = .seconds(30)) {
        self.base = base
        self.cap = max(cap, base)
        self.stableAfter = stableAfter
        self.next = base
    }

    /// The delay before the restart that follows a run of `uptime`.
    public mutating func delay(afterRunOf uptime: Duration) -> Duration {
        if uptime >= self.stableAfter {
            self.next = self.base
        }
        let delay = self.next
        self.next = min(self.next * 2, self.cap)
        return delay
    }
}
