import Atomics
import NIOCore

/// The instances of the app the proxy balances across: the one `upstream`, or the workers the
/// supervisor runs. Shared by every event loop; each event loop has its own connection pool
/// per instance (in its `EventLoopContext`).
///
/// Balancing is least-outstanding-requests over two random choices (Mitzenmacher's "power of
/// two choices"): nearly as good as scanning every instance for the least loaded, without the
/// herd that a shared "least loaded" causes, and without a lock.
public final class UpstreamSet: Sendable {
    public final class Member: Sendable {
        public let index: Int
        public let address: UpstreamAddress
        let target: SocketAddress
        /// In the balance. A supervised worker leaves it when it dies, fails a connect or is
        /// being restarted, and comes back when ready.
        private let ready: ManagedAtomic<Bool>
        /// Attempts in progress on this instance, across event loops.
        let outstanding = ManagedAtomic(0)

        init(index: Int, address: UpstreamAddress, ready: Bool) throws {
            self.index = index
            self.address = address
            self.target = try address.resolve()
            self.ready = ManagedAtomic(ready)
        }

        public var isReady: Bool { self.ready.load(ordering: .relaxed) }

        /// Returns whether the readiness changed.
        @discardableResult
        public func setReady(_ ready: Bool) -> Bool {
            self.ready.exchange(ready, ordering: .relaxed) != ready
        }

        public var requestsInProgress: Int { self.outstanding.load(ordering: .relaxed) }
    }

    public let members: [Member]
    /// Whether instances leave the balance on a failed connect (supervised workers, which
    /// come back when their probe passes); a lone plain upstream never does.
    public let ejectsOnConnectFailure: Bool

    public init(addresses: [UpstreamAddress], supervised: Bool) throws {
        precondition(!addresses.isEmpty, "at least one upstream")
        self.members = try addresses.enumerated().map { try Member(index: $0.offset, address: $0.element, ready: !supervised) }
        self.ejectsOnConnectFailure = supervised
    }

    public var anyReady: Bool { self.members.contains { $0.isReady } }

    /// The instance for the next attempt: the less busy of two random ready ones. When none is
    /// ready (a race with a restart), any will do: the attempt fails fast and is retried.
    func pick() -> Member {
        if self.members.count == 1 {
            return self.members[0]
        }
        let ready = self.members.filter(\.isReady)
        let candidates = ready.isEmpty ? self.members : ready
        guard candidates.count > 1 else { return candidates[0] }
        let first = Int.random(in: 0..<candidates.count)
        var second = Int.random(in: 0..<(candidates.count - 1))
        if second >= first { second += 1 }
        let (a, b) = (candidates[first], candidates[second])
        return a.requestsInProgress <= b.requestsInProgress ? a : b
    }
}
