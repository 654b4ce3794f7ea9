@testable import Breakwater
import NIOCore
import Testing

/// An event's readings of the clock are one; outside an event the clock is read afresh.
@Suite struct EventClockTests {
    @Test func everythingOneEventSetsOffSeesOneTime() {
        let clock = EventClock()
        let (first, later, nested) = clock.during { () -> (NIODeadline, NIODeadline, NIODeadline) in
            let first = clock.now()
            Self.waitForTheClockToMove(past: first)
            return (first, clock.now(), clock.during { clock.now() })
        }
        #expect(later == first)
        #expect(nested == first)
        // The event is over: the next reading is the time, not the event's.
        #expect(clock.now() > first)
    }

    @Test func outsideAnEventEveryReadingIsFresh() {
        let clock = EventClock()
        let first = clock.now()
        Self.waitForTheClockToMove(past: first)
        #expect(clock.now() > first)
        // And an event after it reads the clock again.
        let inEvent = clock.during { clock.now() }
        #expect(inEvent > first)
    }

    private static func waitForTheClockToMove(past reading: NIODeadline) {
        while NIODeadline.now() <= reading {}
    }
}
