import NIOConcurrencyHelpers
import NIOCore

/// Holds requests while the app is not ready and lets them all go the moment it is.
///
/// Shared by every event loop; waiters are woken on their own loops, like the concurrency
/// gates' waiters. Their `hold` timers are their own business.
final class ReadinessGate: Sendable {
    private struct State {
        var isReady: Bool
        var waiters: [UInt64: ConcurrencyGate.Waiter] = [:]
        var nextTicket: UInt64 = 0
    }

    private let state: NIOLockedValueBox<State>

    init(ready: Bool) {
        self.state = NIOLockedValueBox(State(isReady: ready))
    }

    var isReady: Bool { self.state.withLockedValue { $0.isReady } }

    /// Nil when the app is ready (go on); else a ticket, and `waiter` is woken once it is.
    func wait(_ waiter: ConcurrencyGate.Waiter) -> UInt64? {
        self.state.withLockedValue { state in
            guard !state.isReady else { return nil }
            state.nextTicket += 1
            state.waiters[state.nextTicket] = waiter
            return state.nextTicket
        }
    }

    /// False when the waiter was released meanwhile; its wake-up is then on its way.
    func cancel(ticket: UInt64) -> Bool {
        self.state.withLockedValue { $0.waiters.removeValue(forKey: ticket) != nil }
    }

    func setReady(_ ready: Bool) {
        let released: [ConcurrencyGate.Waiter] = self.state.withLockedValue { state in
            state.isReady = ready
            guard ready else { return [] }
            defer { state.waiters.removeAll() }
            return state.waiters.sorted { $0.key < $1.key }.map(\.value)
        }
        for waiter in released {
            waiter.eventLoop.execute(waiter.wake)
        }
    }
}
