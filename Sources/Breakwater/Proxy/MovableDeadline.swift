import NIOCore

/// A deadline on an event loop that moves often and fires rarely: the header, idle, request and
/// body timeouts of a connection, which are pushed back on every request and every body piece.
///
/// Scheduling and cancelling a NIO task per move costs a heap insertion and removal each time
/// (about a tenth of a small request's CPU with three timeouts per request). Instead one task
/// stays scheduled; moving the deadline later only records it, and a task that fires early
/// re-arms itself for the recorded deadline. Only moving it earlier reschedules.
///
/// Event-loop bound, like the handler that owns it.
final class MovableDeadline {
    private let eventLoop: any EventLoop
    private let expired: () -> Void
    private var deadline: NIODeadline?
    private var scheduled: Scheduled<Void>?
    /// When `scheduled` fires; apart from it, so that comparing with it, on every move, copies
    /// no task (a task is a handful of references to retain and release).
    private var firesAt: NIODeadline?

    /// - Parameter expired: called on the event loop once the deadline passes. The pending task
    ///   holds this object and so `expired`'s captures: an owner captured strongly must `cancel()`
    ///   when it goes away (a handler, in `handlerRemoved`).
    init(eventLoop: any EventLoop, expired: @escaping () -> Void) {
        self.eventLoop = eventLoop
        self.expired = expired
    }

    /// Sets the deadline `delay` from now.
    func set(in delay: TimeAmount) {
        self.set(NIODeadline.now() + delay)
    }

    /// Sets the deadline; nil disarms it (a task already scheduled finds nothing to do).
    func set(_ deadline: NIODeadline?) {
        self.deadline = deadline
        guard let deadline else { return }
        if let firesAt = self.firesAt {
            if firesAt <= deadline { return }
            self.scheduled?.cancel()
        }
        self.schedule(at: deadline)
    }

    /// Disarms it and lets go of the scheduled task, when the owner goes away.
    func cancel() {
        self.deadline = nil
        self.scheduled?.cancel()
        self.scheduled = nil
        self.firesAt = nil
    }

    private func schedule(at firesAt: NIODeadline) {
        self.scheduled = self.eventLoop.assumeIsolated().scheduleTask(deadline: firesAt) {
            self.scheduled = nil
            self.firesAt = nil
            guard let deadline = self.deadline else { return }
            if NIODeadline.now() < deadline {
                self.schedule(at: deadline)
            } else {
                self.deadline = nil
                self.expired()
            }
        }
        self.firesAt = firesAt
    }
}
