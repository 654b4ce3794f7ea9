import NIOCore

/// One reading of the clock for everything one event on a loop sets off.
///
/// A request's arrival is timed by the connection guard, the exchange, admission, the retry
/// budget and the deadline; its answer by the exchange, the breaker, the pool and the access
/// log: some fifteen readings a request, a few microseconds apart, each a `clock_gettime` that
/// costs tens of nanoseconds on a virtual machine. nginx reads the time once per turn of its
/// loop (`ngx_time_update`); here the handlers that read a connection's bytes open an event
/// (`during`), and the first reading inside it stands for the whole event. Outside one (a
/// timer firing, a connection closing), every reading is fresh.
///
/// Event-loop bound: one per loop, shared by its handlers, its exchanges and its pools.
final class EventClock {
    private var isInEvent = false
    private var reading: NIODeadline?

    /// The current event's time, read at its first use; the time itself outside an event.
    func now() -> NIODeadline {
        if let reading = self.reading {
            return reading
        }
        let now = NIODeadline.now()
        if self.isInEvent {
            self.reading = now
        }
        return now
    }

    /// Runs `event`, in which `now()` reads the clock at most once. An event inside another
    /// is part of it.
    func during<Result>(_ event: () throws -> Result) rethrows -> Result {
        if self.isInEvent {
            return try event()
        }
        self.isInEvent = true
        defer {
            self.isInEvent = false
            self.reading = nil
        }
        return try event()
    }
}
