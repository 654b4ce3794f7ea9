import Atomics
import NIOConcurrencyHelpers

/// The proxy's place in its life — starting, serving, draining — as every part sees it: the
/// data path (hold requests until the app is ready; refuse new ones once stopping), the admin
/// listener (`/health/ready`) and the services that move it along.
public final class Lifecycle: Sendable {
    public enum Phase: Int, AtomicValue, Sendable {
        case serving
        /// A drain began: readiness answers 503, requests are still served (`drain.delay`).
        case draining
        /// The listener is closed; requests in flight finish, new ones are refused.
        case stopping
    }

    let readiness: ReadinessGate
    /// The process's metrics, which outlive reloads.
    public let metrics: ProxyMetrics
    /// Requests between their head and the end of their response, across reloads.
    let requestsInFlight = ManagedAtomic(0)
    private let phase = ManagedAtomic(Phase.serving)
    private let drainTrigger = NIOLockedValueBox<(@Sendable () -> Void)?>(nil)
    private let appExitCode = NIOLockedValueBox<Int32?>(nil)
    private let rollingRestartTrigger = NIOLockedValueBox<(@Sendable () -> Bool)?>(nil)

    /// - Parameter appReadyAtStart: true without a `[readiness]` probe.
    public init(appReadyAtStart: Bool, metrics: ProxyMetrics = ProxyMetrics()) {
        self.readiness = ReadinessGate(ready: appReadyAtStart)
        self.metrics = metrics
        metrics.upstreamReady.record(appReadyAtStart ? 1 : 0)
        metrics.draining.record(0)
    }

    public var currentPhase: Phase { self.phase.load(ordering: .acquiring) }
    public var isAppReady: Bool { self.readiness.isReady }

    func advance(to phase: Phase) {
        self.phase.store(phase, ordering: .releasing)
        self.metrics.draining.record(phase == .serving ? 0 : 1)
    }

    public func setAppReady(_ ready: Bool) {
        self.updateAppReadiness { ready }
    }

    private func updateAppReadiness(_ ready: () -> Bool) {
        self.readiness.setReady(as: ready) { self.metrics.upstreamReady.record($0 ? 1 : 0) }
    }

    /// Puts an app instance in or out of the balance, and the app's readiness with it: ready
    /// while any instance is. The supervisor's probes and the data path's ejections both come
    /// here, so the gate that holds requests never disagrees with the balance.
    ///
    /// - Returns: whether the instance's place changed.
    @discardableResult
    func setInstance(_ member: UpstreamSet.Member, of upstreams: UpstreamSet, ready: Bool) -> Bool {
        let changed = member.setReady(ready)
        self.metrics.workerReady(member.index, ready)
        self.updateAppReadiness { upstreams.anyReady }
        return changed
    }

    /// The supervised app ended for good with this code; the process exits with it.
    public var exitCode: Int32? { self.appExitCode.withLockedValue { $0 } }

    func setAppExitCode(_ code: Int32) {
        self.appExitCode.withLockedValue { $0 = code }
    }

    /// What `POST /admin/drain` does: the same as SIGTERM.
    public func requestDrain() {
        self.drainTrigger.withLockedValue { $0 }?()
    }

    public enum RollingRestartRequest: Sendable {
        case started
        /// One is under way, or the app is stopping.
        case refused
        case noSupervisedApp
    }

    /// What SIGUSR2 and `POST /admin/restart-app` do.
    @discardableResult
    public func requestRollingRestart() -> RollingRestartRequest {
        guard let trigger = self.rollingRestartTrigger.withLockedValue({ $0 }) else { return .noSupervisedApp }
        return trigger() ? .started : .refused
    }

    /// `trigger` starts a rolling restart and says whether it did.
    public func onRollingRestartRequested(_ trigger: @escaping @Sendable () -> Bool) {
        self.rollingRestartTrigger.withLockedValue { $0 = trigger }
    }

    /// Set by whoever runs the services (the command line: the service group's graceful shutdown).
    public func onDrainRequested(_ trigger: @escaping @Sendable () -> Void) {
        self.drainTrigger.withLockedValue { $0 = trigger }
    }
}
