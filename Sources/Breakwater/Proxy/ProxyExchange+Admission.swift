import Atomics
import NIOCore

/// Admission, between a request's head and its first attempt: wait for the app to be ready,
/// then take a slot in the route's bulkhead and in the proxy's limit, queueing where one is
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
    ///
    /// First of all the request takes its place under the later gates' hard limits: a request
    /// waiting in its route's bulkhead is held by the proxy too, and the proxy's `hard_limit`
    /// counts every request held, while its `soft_limit` counts only those forwarded.
    func passGates() {
        if !self.placesReserved {
            for (index, gate) in self.gates.enumerated().dropFirst() where !gate.reserve() {
                for reserved in self.gates[1..<index] { reserved.unreserve() }
                self.respondLocally(.hardLimit)
                return
            }
            self.placesReserved = true
        }
        while self.slotsHeld < self.gates.count {
            let gate = self.gates[self.slotsHeld]
            self.gatesAsked = self.slotsHeld + 1
            switch gate.acquire(self.waiter { $0.slotGranted() }, reserved: self.slotsHeld > 0) {
            case .admitted:
                self.slotsHeld += 1
            case .queued(let ticket):
                self.queued = (self.slotsHeld, ticket)
                self.route.metrics.queued.increment()
                self.waitTimer = self.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(gate.queueTimeout)) {
                    self.waitTimer = nil
                    // Lost the race to a slot handed over meanwhile: its wake-up is on the way.
                    guard let queued = self.queued, gate.cancel(ticket: queued.ticket) else { return }
                    self.queued = nil
                    self.route.metrics.queued.decrement()
                    self.respondLocally(.queueTimeout)
                }
                return
            case .rejected:
                self.respondLocally(.hardLimit)
                return
            }
        }
        guard self.admittedByBreaker() else { return }
        self.attempt()
    }

    /// A gate's queue handed this request a slot.
    func slotGranted() {
        guard let queued = self.queued else {
            assertionFailure("a slot granted to an exchange that was not queued")
            return
        }
        self.queued = nil
        self.route.metrics.queued.decrement()
        guard case .connecting = self.phase else {
            // The exchange ended while the slot was on its way: pass it on.
            self.gates[queued.gate].release()
            return
        }
        self.waitTimer?.cancel()
        self.waitTimer = nil
        self.slotsHeld += 1
        self.passGates()
    }

    /// Once finished: out of any queue, and every slot handed on, the breaker's included — an
    /// exchange that ends without an outcome (a body too large, a stalled upload, a client that
    /// left) would otherwise keep a half-open breaker's probe forever, and the route closed.
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
        if self.placesReserved {
            // The places in gates not asked yet: asking used a gate's place up.
            for gate in self.gates.dropFirst(max(1, self.gatesAsked)) { gate.unreserve() }
            self.placesReserved = false
        }
        if let queued = self.queued, self.gates[queued.gate].cancel(ticket: queued.ticket) {
            self.queued = nil
            self.route.metrics.queued.decrement()
        }
        self.leaveInFlight()
        if let probe = self.probe {
            self.route.release(probe)
            self.probe = nil
        }
        self.recordCompletion()
        while self.slotsHeld > 0 {
            self.slotsHeld -= 1
            self.gates[self.slotsHeld].release()
        }
    }
}
