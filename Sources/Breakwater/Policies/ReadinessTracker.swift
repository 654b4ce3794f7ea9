/// Whether the app is ready, from the outcomes of its health probes: `healthy_threshold`
/// successes in a row make it ready, `unhealthy_threshold` failures in a row make it not ready.
/// It starts not ready, so a cold start holds requests until the first healthy probe.
public struct ReadinessTracker: Sendable {
    public let healthyThreshold: Int
    public let unhealthyThreshold: Int
    public private(set) var isReady = false
    private var streak = 0

    public init(healthyThreshold: Int, unhealthyThreshold: Int) {
        self.healthyThreshold = healthyThreshold
        self.unhealthyThreshold = unhealthyThreshold
    }

    /// Records a probe; returns the new readiness when it changed.
    public mutating func record(healthy: Bool) -> Bool? {
        if healthy == self.isReady {
            self.streak = 0
            return nil
        }
        self.streak += 1
        guard self.streak >= (healthy ? self.healthyThreshold : self.unhealthyThreshold) else {
            return nil
        }
        self.isReady = healthy
        self.streak = 0
        return healthy
    }
}
