@testable import Breakwater
import Testing

@Suite struct ConcurrencyLimiterTests {
    @Test func admitsUpToTheSoftLimitQueuesToTheHardLimitAndRefusesBeyond() {
        var limiter = ConcurrencyLimiter<Int>(softLimit: 2, hardLimit: 4)
        #expect({ limiter.acquire(1) }() == .admitted)
        #expect({ limiter.acquire(2) }() == .admitted)
        #expect({ limiter.acquire(3) }() == .queued(ticket: 1))
        #expect({ limiter.acquire(4) }() == .queued(ticket: 2))
        #expect({ limiter.acquire(5) }() == .rejected)
        #expect(limiter.active == 2)
        #expect(limiter.queued == 2)
    }

    /// A place reserved counts toward the hard limit until its request asks for its slot,
    /// which it then gets or queues for, never refused; an unused place is given back.
    @Test func aReservedPlaceCountsTowardTheHardLimitAndIsNeverRefused() {
        var limiter = ConcurrencyLimiter<Int>(softLimit: 1, hardLimit: 3)
        #expect({ limiter.reserve() }())
        #expect({ limiter.reserve() }())
        #expect({ limiter.acquire(1) }() == .admitted)
        #expect({ limiter.acquire(2) }() == .rejected, "1 active and 2 reserved fill the hard limit")
        #expect(!{ limiter.reserve() }())
        #expect({ limiter.acquire(3, reserved: true) }() == .queued(ticket: 1))
        #expect(limiter.reserved == 1)
        limiter.unreserve()
        #expect({ limiter.acquire(4) }() == .queued(ticket: 2), "the place given back is free again")
        #expect(limiter.reserved == 0 && limiter.active == 1 && limiter.queued == 2)
    }

    @Test func aFreedSlotGoesToTheFirstWaiter() {
        var limiter = ConcurrencyLimiter<Int>(softLimit: 1, hardLimit: 3)
        _ = limiter.acquire(1)
        _ = limiter.acquire(2)
        _ = limiter.acquire(3)
        #expect({ limiter.release() }() == 2)
        #expect(limiter.active == 1)
        #expect({ limiter.release() }() == 3)
        #expect({ limiter.release() }() == nil)
        #expect(limiter.active == 0)
    }

    @Test func aCancelledWaiterLeavesTheQueue() {
        var limiter = ConcurrencyLimiter<Int>(softLimit: 1, hardLimit: 3)
        _ = limiter.acquire(1)
        guard case .queued(let ticket) = limiter.acquire(2) else {
            Issue.record("expected to queue")
            return
        }
        _ = limiter.acquire(3)
        #expect({ limiter.cancel(ticket: ticket) }())
        #expect(!{ limiter.cancel(ticket: ticket) }())
        #expect({ limiter.release() }() == 3)
        // The room it left is free for a newcomer.
        #expect({ limiter.acquire(4) }() == .queued(ticket: 3))
    }

    @Test func aWaiterHandedASlotCannotBeCancelled() {
        var limiter = ConcurrencyLimiter<Int>(softLimit: 1, hardLimit: 2)
        _ = limiter.acquire(1)
        guard case .queued(let ticket) = limiter.acquire(2) else {
            Issue.record("expected to queue")
            return
        }
        #expect({ limiter.release() }() == 2)
        #expect(!{ limiter.cancel(ticket: ticket) }())
    }

    @Test func newcomersDoNotOvertakeTheQueue() {
        var limiter = ConcurrencyLimiter<Int>(softLimit: 1, hardLimit: 3)
        _ = limiter.acquire(1)
        _ = limiter.acquire(2)
        #expect({ limiter.release() }() == 2)
        #expect({ limiter.acquire(3) }() == .queued(ticket: 2))
    }

    /// A reload's new limits apply to the requests already counted: a raised soft limit hands
    /// its new slots to waiters at once, a lowered one retires slots as they come back.
    @Test func newLimitsApplyToTheRequestsAlreadyCounted() {
        var limiter = ConcurrencyLimiter<Int>(softLimit: 1, hardLimit: 4)
        _ = limiter.acquire(1)
        _ = limiter.acquire(2)
        _ = limiter.acquire(3)
        _ = limiter.acquire(4)
        #expect({ limiter.setLimits(softLimit: 3, hardLimit: 4) }() == [2, 3])
        #expect(limiter.active == 3)
        #expect(limiter.queued == 1)

        #expect({ limiter.setLimits(softLimit: 1, hardLimit: 2) }() == [])
        #expect({ limiter.acquire(5) }() == .rejected, "over the lowered hard limit")
        // Two of the three slots retire as they come back; the third goes to the waiter.
        #expect({ limiter.release() }() == nil)
        #expect({ limiter.release() }() == nil)
        #expect(limiter.active == 1)
        #expect({ limiter.release() }() == 4)
        #expect(limiter.active == 1)
        #expect({ limiter.release() }() == nil)
        #expect(limiter.active == 0)
    }
}
