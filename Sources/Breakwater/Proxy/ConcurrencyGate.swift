import NIOConcurrencyHelpers
import NIOCore

/// A `ConcurrencyLimiter` shared by every event loop: the proxy's `[concurrency]` or a route's
/// bulkhead. The lock is held for a few instructions, never across I/O; a waiter handed a slot
/// is woken on its own event loop.
final class ConcurrencyGate: Sendable {
    /// Someone waiting for a slot, and how to wake them on their event loop.
    struct Waiter: Sendable {
        let eventLoop: any EventLoop
        let wake: @Sendable () -> Void
    }

    private struct State {
        var configuration: ConcurrencyConfig
        var limiter: ConcurrencyLimiter<Waiter>
    }

    /// One box for both: a reload changes the limits under the same lock the requests take.
    private let state: NIOLockedValueBox<State>

    init(configuration: ConcurrencyConfig) {
        self.state = NIOLockedValueBox(
            State(configuration: configuration, limiter: ConcurrencyLimiter(softLimit: configuration.softLimit, hardLimit: configuration.hardLimit))
        )
    }

    /// The gate a generation uses: a new one, or after a reload the previous generation's with
    /// `configuration`'s limits. The requests it holds and queues stay counted, so a reload never
    /// opens a fresh set of slots beside the ones in use.
    static func continuing(_ previous: ConcurrencyGate?, with configuration: ConcurrencyConfig) -> ConcurrencyGate {
        guard let previous else { return ConcurrencyGate(configuration: configuration) }
        let woken = previous.state.withLockedValue { state in
            state.configuration = configuration
            return state.limiter.setLimits(softLimit: configuration.softLimit, hardLimit: configuration.hardLimit)
        }
        for waiter in woken {
            waiter.eventLoop.execute(waiter.wake)
        }
        return previous
    }

    /// How long a request may wait in the queue (`queue_timeout`).
    var queueTimeout: Duration { self.state.withLockedValue { $0.configuration.queueTimeout } }

    /// - Parameters:
    ///   - waiter: made only when the request has to queue.
    ///   - reserved: the request reserved its place at admission (`reserve`).
    func acquire(_ waiter: @autoclosure () -> Waiter, reserved: Bool = false) -> ConcurrencyLimiter<Waiter>.Admission {
        self.state.withLockedValue { $0.limiter.acquire(waiter(), reserved: reserved) }
    }

    /// A place under the hard limit for a request that asks for its slot later; false when
    /// the gate is full.
    func reserve() -> Bool {
        self.state.withLockedValue { $0.limiter.reserve() }
    }

    func unreserve() {
        self.state.withLockedValue { $0.limiter.unreserve() }
    }

    /// Gives a slot back; it goes straight to the first waiter, if any.
    func release() {
        if let next = self.state.withLockedValue({ $0.limiter.release() }) {
            next.eventLoop.execute(next.wake)
        }
    }

    /// False when the waiter was handed a slot meanwhile; its wake-up is on its way.
    func cancel(ticket: UInt64) -> Bool {
        self.state.withLockedValue { $0.limiter.cancel(ticket: ticket) }
    }
}
