/// Keeps a route's retries under a share of its requests, over a sliding window, so retries
/// cannot multiply the load on an app that is already failing (Envoy's retry budget).
///
/// The window is ten one-second buckets; a bucket is reused once it is older than the window.
/// `minimumRetries` lets a quiet route retry at all: with two requests in ten seconds, 20% of
/// them would allow none.
public struct RetryBudget: Sendable {
    public let ratio: Double
    public let minimumRetries: Int
    private var buckets: [Bucket]
    private static let bucketCount = 10
    private static let bucketNanoseconds: UInt64 = 1_000_000_000

    private struct Bucket: Sendable {
        var second: UInt64 = .max
        var requests = 0
        var retries = 0
    }

    public init(ratio: Double, minimumRetries: Int = 3) {
        self.ratio = ratio
        self.minimumRetries = minimumRetries
        self.buckets = Array(repeating: Bucket(), count: Self.bucketCount)
    }

    /// Counts a request (a first attempt).
    public mutating func recordRequest(now: PolicyInstant) {
        self.withBucket(now) { $0.requests += 1 }
    }

    /// Takes one retry from the budget if there is one left.
    public mutating func tryAcquireRetry(now: PolicyInstant) -> Bool {
        guard self.hasRetryLeft(now: now) else { return false }
        self.withBucket(now) { $0.retries += 1 }
        return true
    }

    /// Whether a retry would be allowed now, taking none.
    public func hasRetryLeft(now: PolicyInstant) -> Bool {
        let (requests, retries) = self.totals(now)
        return Double(retries) < max(Double(self.minimumRetries), self.ratio * Double(requests))
    }

    private mutating func withBucket(_ now: PolicyInstant, _ update: (inout Bucket) -> Void) {
        let second = now.nanoseconds / Self.bucketNanoseconds
        let index = Int(second % UInt64(Self.bucketCount))
        if self.buckets[index].second != second {
            self.buckets[index] = Bucket(second: second)
        }
        update(&self.buckets[index])
    }

    private func totals(_ now: PolicyInstant) -> (requests: Int, retries: Int) {
        let second = now.nanoseconds / Self.bucketNanoseconds
        var requests = 0
        var retries = 0
        for bucket in self.buckets where bucket.second != .max && second &- bucket.second < UInt64(Self.bucketCount) {
            requests += bucket.requests
            retries += bucket.retries
        }
        return (requests, retries)
    }
}
