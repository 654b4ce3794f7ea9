import DequeModule

/// Load shedding in HAProxy's shape: at most `soft_limit` requests go to the app at once; up
/// to `hard_limit` are held in all, the ones over the soft limit waiting in a FIFO queue; a
/// request over the hard limit is refused at once, so an overloaded proxy answers in
/// microseconds instead of after a queue it could never drain.
///
/// A plain value, generic over what a waiter is, so the data path can hand it a callback and
/// tests a number. A freed slot goes straight to the first waiter: `release` returns it, and
/// the caller wakes it. Queue timeouts are the caller's timers, which `cancel` a waiter.
///
/// A request held somewhere before it asks for a slot here (in a route's bulkhead, before the
/// proxy's limit) counts toward the hard limit from the start: it `reserve`s its place, and
/// its `acquire` later takes a slot or queues without being refused.
public struct ConcurrencyLimiter<Waiter> {
    public enum Admission: Equatable {
        case admitted
        /// Waiting; `ticket` cancels the wait.
        case queued(ticket: UInt64)
        case rejected
    }

    public private(set) var softLimit: Int
    public private(set) var hardLimit: Int
    /// Requests holding a slot now (forwarded to the app).
    public private(set) var active = 0
    /// Requests that reserved a place and have not asked for their slot yet.
    public private(set) var reserved = 0
    private var queue = Deque<(ticket: UInt64, waiter: Waiter)>()
    private var nextTicket: UInt64 = 0

    public init(softLimit: Int, hardLimit: Int) {
        self.softLimit = softLimit
        self.hardLimit = max(hardLimit, softLimit)
    }

    /// New limits for the requests already counted (a reload): raising the soft limit hands
    /// the new slots to waiters at once, which are returned to be woken; lowering it lets the
    /// slots over it retire as they are released. Waiters over a lowered hard limit keep their
    /// place: they were accepted, and their queue timeout still bounds them.
    public mutating func setLimits(softLimit: Int, hardLimit: Int) -> [Waiter] {
        self.softLimit = softLimit
        self.hardLimit = max(hardLimit, softLimit)
        var woken: [Waiter] = []
        while self.active < self.softLimit, let next = self.queue.popFirst() {
            self.active += 1
            woken.append(next.waiter)
        }
        return woken
    }

    /// Requests waiting for a slot now.
    public var queued: Int { self.queue.count }

    /// Requests held now, in all: with a slot, waiting for one, or with a place reserved.
    private var held: Int { self.active + self.queue.count + self.reserved }

    /// Takes a place under the hard limit for a request that will ask for its slot later;
    /// false when there is none (refuse the request).
    public mutating func reserve() -> Bool {
        guard self.held < self.hardLimit else { return false }
        self.reserved += 1
        return true
    }

    /// Gives back a reserved place whose request ended before it asked for its slot.
    public mutating func unreserve() {
        self.reserved -= 1
    }

    /// - Parameters:
    ///   - waiter: made only when the request has to queue, which on the fast path it does not.
    ///   - reserved: the request reserved its place (`reserve`), so it is never refused.
    public mutating func acquire(_ waiter: @autoclosure () -> Waiter, reserved: Bool = false) -> Admission {
        if reserved {
            self.reserved -= 1
        } else if self.held >= self.hardLimit {
            return .rejected
        }
        if self.active < self.softLimit && self.queue.isEmpty {
            self.active += 1
            return .admitted
        }
        self.nextTicket += 1
        self.queue.append((self.nextTicket, waiter()))
        return .queued(ticket: self.nextTicket)
    }

    /// Gives a slot back. When someone waits, the slot passes to the first of them, who is
    /// returned to be woken; it then holds the slot and must release it in turn. A slot over a
    /// soft limit lowered meanwhile retires instead.
    public mutating func release() -> Waiter? {
        if self.active <= self.softLimit, let next = self.queue.popFirst() {
            return next.waiter
        }
        self.active -= 1
        return nil
    }

    /// Takes a waiter out of the queue (it timed out, or its client left). False when it was
    /// no longer queued: it has been handed a slot meanwhile, which it must release.
    public mutating func cancel(ticket: UInt64) -> Bool {
        guard let index = self.queue.firstIndex(where: { $0.ticket == ticket }) else {
            return false
        }
        self.queue.remove(at: index)
        return true
    }
}

extension ConcurrencyLimiter: Sendable where Waiter: Sendable {}
