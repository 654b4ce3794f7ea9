/// A point on a monotonic clock, as the policies see time.
///
/// Policies never read a clock themselves: every decision takes `now`, so the data path passes
/// the event loop's clock and unit tests pass exact instants and never sleep.
public struct PolicyInstant: Comparable, Hashable, Sendable {
    public var nanoseconds: UInt64

    public init(nanoseconds: UInt64) {
        self.nanoseconds = nanoseconds
    }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    public static func + (lhs: Self, rhs: Duration) -> Self {
        Self(nanoseconds: lhs.nanoseconds &+ UInt64(max(0, rhs.nanoseconds)))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    public func duration(since earlier: Self) -> Duration {
        self > earlier ? .nanoseconds(Int64(self.nanoseconds - earlier.nanoseconds)) : .zero
    }
}

extension Duration {
    /// Whole nanoseconds, saturating: enough for any timeout a configuration can hold.
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = self.components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? (seconds < 0 ? .min : .max) : scaled &+ attoseconds / 1_000_000_000
    }
}
