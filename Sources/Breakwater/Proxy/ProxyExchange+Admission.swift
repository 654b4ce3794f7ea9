import Atomics
import NIOCore

/// Admission, between a request's head and its first attempt: wait for the app to be ready,
/// then take a slot in the proxy's limit and in the route's bulkhead, queueing where one is
/// full. Every wait is bounded (`readiness.hold`, `queue_timeout`) and left when the client goes.
extension ProxyExchange {
    /// A waiter that wakes this exchange, on its event loop, with `action`.
    private func waiter(_ action: @escaping @Sendable (ProxyExchange) -> Void) -> ConcurrencyGate.Waiter {
        let exchange = NIOLoopBound(self, eventLoop: self.eventLoop)
        return ConcurrencyGate.Waiter(eventLoop: self.eventLoop) { action(exchange.value) }
    }

    /// While the app is not ready, a request waits up to `readiness.hold` for it, then goes on
    /// with `next`; a cold start, or a retry after a crash, answers late instead of failing.
    func waitForReadiness(then next: @escaping (ProxyExchange) -> Void) {
        guard let hold = self.shared.readinessHold,
            let ticket = self.shared.lifecycle.readiness.wait(self.waiter { $0.appBecameReady() })
        else {
            next(self)
            return
        }
        self.readinessTicket = ticket
        self.afterReadiness = next
        self.waitTimer = self.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(hold)) {
            self.waitTimer = nil
            guard let ticket = self.readinessTicket, self.shared.lifecycle.readiness.cancel(ticket: ticket) else { return }
            self.readinessTicket = nil
            self.respondLocally(.notReady)
        }
    }

    func appBecameReady() {
        self.readinessTicket = nil
        self.waitTimer?.cancel()
        self.waitTimer = nil
        guard case .connecting = self.phase, let next = self.afterReadiness else { return }
        self.afterReadiness = nil
        next(self)
    }

    /// Takes a slot in each gate in turn, queueing where one is full, then asks the breaker.
    func passGates() {
        while self.slotsHeld < self.gates.count {
            let gate = self.gates[self.slotsHeld]
            switch gate.acquire(self.waiter { $0.slotGranted() }) {
            case .admitted:
                self.slotsHeld += 1
            case .queued(let ticket):
                self.queueTicket = ticket
                self.route.metrics.queued.increment()
                self.waitTimer = self.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(gate.configuration.queueTimeout)) {
                    self.waitTimer = nil
                    // Lost the race to a slot handed over meanwhile: its wake-up is on the way.
                    guard let ticket = self.queueTicket, gate.cancel(ticket: ticket) else { return }
                    self.queueTicket = nil
                    self.route.metrics.queued.decrement()
                    self.respondLocally(.queueTimeout)
                }
                return
            case .rejected:
                self.respondLocally(.hardLimit)
                return
            }
        }
        self.countedInFlight = true
        self.route.metrics.inFlight.increment()
        guard self.admittedByBreaker() else { return }
        self.attempt()
    }

    /// A gate's queue handed this request a slot.
    func slotGranted() {
        self.queueTicket = nil
        self.route.metrics.queued.decrement()
        self.waitTimer?.cancel()
        self.waitTimer = nil
        guard case .connecting = self.phase else {
            // The client left while queued: pass the slot on.
            self.gates[self.slotsHeld].release()
            return
        }
        self.slotsHeld += 1
        self.passGates()
    }

    /// Once finished: out of any queue, and every slot handed on.
    func leaveQueuesAndReleaseSlots() {
        // A timer still pending (a head held back, a queue or backoff wait) has nothing to do.
        self.waitTimer?.cancel()
        self.waitTimer = nil
        self.heldHead = nil
        self.shared.lifecycle.requestsInFlight.wrappingDecrement(ordering: .relaxed)
        if let ticket = self.readinessTicket {
            _ = self.shared.lifecycle.readiness.cancel(ticket: ticket)
            self.readinessTicket = nil
        }
        if let ticket = self.queueTicket, self.gates[self.slotsHeld].cancel(ticket: ticket) {
            self.queueTicket = nil
            self.route.metrics.queued.decrement()
        }
        if self.countedInFlight {
            self.route.metrics.inFlight.decrement()
        }
        self.recordCompletion()
        while self.slotsHeld > 0 {
            self.slotsHeld -= 1
            self.gates[self.slotsHeld].release()
        }
    }
}
