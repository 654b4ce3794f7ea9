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

    /// Sets readiness to what `ready` answers under the gate's lock, and tells `report` in
    /// the same order. Readiness computed from shared state (whether any worker is in the
    /// balance) by two threads at once — a probe in the supervisor, an ejection on an event
    /// loop — would otherwise be written in the wrong order now and then, and the gate left
    /// shut with a worker ready until the next change, which may never come.
    func setReady(as ready: () -> Bool, report: (Bool) -> Void) {
        let released: [ConcurrencyGate.Waiter] = self.state.withLockedValue { state in
            let ready = ready()
            state.isReady = ready
            report(ready)
            guard ready else { return [] }
            defer { state.waiters.removeAll() }
            return state.waiters.sorted { $0.key < $1.key }.map(\.value)
        }
        for waiter in released {
            waiter.eventLoop.execute(waiter.wake)
        }
    }
}
