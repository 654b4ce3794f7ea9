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

    let configuration: ConcurrencyConfig
    private let limiter: NIOLockedValueBox<ConcurrencyLimiter<Waiter>>

    init(configuration: ConcurrencyConfig) {
        self.configuration = configuration
        self.limiter = NIOLockedValueBox(ConcurrencyLimiter(softLimit: configuration.softLimit, hardLimit: configuration.hardLimit))
    }

    /// - Parameter waiter: made only when the request has to queue.
    func acquire(_ waiter: @autoclosure () -> Waiter) -> ConcurrencyLimiter<Waiter>.Admission {
        self.limiter.withLockedValue { $0.acquire(waiter()) }
    }

    /// Gives a slot back; it goes straight to the first waiter, if any.
    func release() {
        if let next = self.limiter.withLockedValue({ $0.release() }) {
            next.eventLoop.execute(next.wake)
        }
    }

    /// False when the waiter was handed a slot meanwhile; its wake-up is then on its way.
    func cancel(ticket: UInt64) -> Bool {
        self.limiter.withLockedValue { $0.cancel(ticket: ticket) }
    }
}
