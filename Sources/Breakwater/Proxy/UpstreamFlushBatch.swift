import NIOCore

/// Requests to the app, sent together at the end of the event loop's turn while other
/// requests on the loop are at the app.
///
/// A write to an app that has run out of work wakes it, and waking a process on another CPU is
/// an interrupt, which on a virtual machine is a trip through the hypervisor, paid for by the
/// writer in system time. Under load, one turn of the loop reads many clients' requests. Sent as
/// each is read, they find the app run dry between them and wake it again and again; sent
/// together once the turn's reads are handled, they wake it once. HAProxy sends the same way:
/// what a turn's reads produce goes out after them. On the bench's saturated run this took
/// 0.7 µs of system time off a request, and raised throughput 3% (README.md, "Benchmarks").
///
/// A request alone at the app goes at once: there is nothing to share its wake-up with, and the
/// task that ends a turn costs some 2,800 instructions, 5% of a proxied request. Responses to
/// clients go at once too: holding them measured worse.
///
/// Event-loop bound: one per loop, shared by its connections to the app.
final class UpstreamFlushBatch {
    private let eventLoop: any EventLoop
    /// This loop's connections to the app leased to a request: the requests at the app.
    private var leased = 0
    /// Connections whose writes go out at the end of this turn.
    private var waiting: [UpstreamHandler] = []

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    /// Whether `connection`'s flush waits for the end of the turn, which then flushes it
    /// (`UpstreamHandler.flushHeldWrites`); false when it should flush at once. Asked once per
    /// turn per connection: a connection already waiting has its later writes sent with it.
    func holdsFlush(of connection: UpstreamHandler) -> Bool {
        guard self.leased > 1 else { return false }
        if self.waiting.isEmpty {
            // Run after the turn's I/O: NIO handles every ready channel, then its tasks.
            self.eventLoop.assumeIsolatedUnsafeUnchecked().execute { self.endTurn() }
        }
        self.waiting.append(connection)
        return true
    }

    private func endTurn() {
        let due = self.waiting
        self.waiting.removeAll(keepingCapacity: true)
        for connection in due {
            connection.flushHeldWrites()
        }
    }

    /// A connection of this loop was leased to a request, or given back.
    func countLease(started: Bool) {
        self.leased += started ? 1 : -1
        assert(self.leased >= 0, "a lease given back twice")
    }
}
