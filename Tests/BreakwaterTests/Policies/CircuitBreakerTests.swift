@testable import Breakwater
import Testing

@Suite struct CircuitBreakerTests {
    private let start = PolicyInstant(nanoseconds: 1_000_000_000_000)

    private func at(_ offset: Duration) -> PolicyInstant {
        self.start + offset
    }

    private func breaker(_ configure: (inout BreakerConfig) -> Void = { _ in }) -> CircuitBreaker {
        var configuration = BreakerConfig()
        configure(&configuration)
        return CircuitBreaker(configuration: configuration)
    }

    @Test func opensAfterConsecutiveFailures() {
        var breaker = self.breaker { $0.failureThreshold = 3 }
        #expect({ breaker.record(.failure, probe: false, now: self.start) }() == nil)
        #expect({ breaker.record(.failure, probe: false, now: self.start) }() == nil)
        #expect({ breaker.record(.failure, probe: false, now: self.start) }() == .open(until: self.at(.seconds(30))))
        #expect({ breaker.admit(now: self.at(.seconds(10))) }() == .rejected(retryAfter: .seconds(20)))
    }

    /// Looking at a breaker (`advance`, as the admin listener and a scrape do) moves it to
    /// half-open once its recovery time has passed, and not a moment before; the probe slots
    /// are those the next request would have found.
    @Test func advancingAnOpenBreakerMovesItToHalfOpenOnlyOnceItsTimeHasPassed() {
        var breaker = self.breaker { $0.failureThreshold = 1; $0.halfOpenRequests = 1 }
        breaker.record(.failure, probe: false, now: self.start)
        breaker.advance(now: self.at(.seconds(29)))
        #expect(breaker.state == .open(until: self.at(.seconds(30))))
        #expect(breaker.snapshot(now: self.at(.seconds(29))).state == "open")
        breaker.advance(now: self.at(.seconds(30)))
        #expect(breaker.state == .halfOpen)
        #expect(breaker.snapshot(now: self.at(.seconds(30))).probeIn == nil)
        #expect({ breaker.admit(now: self.at(.seconds(31))) }() == .admitted(probe: true))
        #expect({ breaker.admit(now: self.at(.seconds(31))) }() == .rejected(retryAfter: .seconds(1)))
    }

    @Test func aSuccessBreaksTheStreak() {
        var breaker = self.breaker { $0.failureThreshold = 2; $0.minimumRequests = 100 }
        breaker.record(.failure, probe: false, now: self.start)
        breaker.record(.success, probe: false, now: self.start)
        breaker.record(.failure, probe: false, now: self.start)
        #expect(breaker.state == .closed)
    }

    @Test func opensOnTheFailureRateOnceTheWindowHasEnough() {
        var breaker = self.breaker {
            $0.failureThreshold = 100
            $0.failureRate = 0.5
            $0.window = 10
            $0.minimumRequests = 6
        }
        // Alternating outcomes: 50% failures, but only once 6 are in the window does it count.
        for index in 0..<5 {
            breaker.record(index.isMultiple(of: 2) ? .failure : .success, probe: false, now: self.start)
            #expect(breaker.state == .closed)
        }
        #expect(breaker.record(.success, probe: false, now: self.start) == nil)  // 3 of 6: 50%, but a success
        #expect({ breaker.record(.failure, probe: false, now: self.start) }() == .open(until: self.at(.seconds(30))))
    }

    @Test func theWindowForgetsOldOutcomes() {
        var breaker = self.breaker {
            $0.failureThreshold = 100
            $0.failureRate = 0.5
            $0.window = 4
            $0.minimumRequests = 4
        }
        breaker.record(.failure, probe: false, now: self.start)
        for _ in 0..<4 { breaker.record(.success, probe: false, now: self.start) }
        // The early failure slid out: one failure in the last four is 25%.
        breaker.record(.failure, probe: false, now: self.start)
        #expect(breaker.state == .closed)
        let snapshot = breaker.snapshot(now: self.start)
        #expect(snapshot.windowRequests == 4)
        #expect(snapshot.windowFailures == 1)
    }

    @Test func halfOpenLetsLimitedProbesThroughAndClosesOnSuccesses() {
        var breaker = self.breaker { $0.failureThreshold = 1; $0.successThreshold = 2; $0.halfOpenRequests = 1 }
        breaker.record(.failure, probe: false, now: self.start)
        let later = self.at(.seconds(30))
        #expect({ breaker.admit(now: later) }() == .admitted(probe: true))
        #expect(breaker.state == .halfOpen)
        #expect({ breaker.admit(now: later) }() == .rejected(retryAfter: .seconds(1)))
        #expect({ breaker.record(.success, probe: true, now: later) }() == nil)
        #expect({ breaker.admit(now: later) }() == .admitted(probe: true))
        #expect({ breaker.record(.success, probe: true, now: later) }() == .closed)
        #expect({ breaker.admit(now: later) }() == .admitted(probe: false))
    }

    @Test func aFailedProbeReopensForLongerUpToTheMaximum() {
        var breaker = self.breaker {
            $0.failureThreshold = 1
            $0.recoveryTimeout = .seconds(10)
            $0.maxRecoveryTimeout = .seconds(35)
        }
        breaker.record(.failure, probe: false, now: self.start)
        var now = self.at(.seconds(10))
        for expected in [Duration.seconds(20), .seconds(35), .seconds(35)] {
            #expect({ breaker.admit(now: now) }() == .admitted(probe: true))
            #expect({ breaker.record(.failure, probe: true, now: now) }() == .open(until: now + expected))
            now = now + expected
        }
        // Closing brings the base back.
        for _ in 0..<3 {
            #expect({ breaker.admit(now: now) }() == .admitted(probe: true))
            breaker.record(.success, probe: true, now: now)
        }
        #expect(breaker.state == .closed)
        #expect(breaker.recoveryTimeout == .seconds(10))
    }

    @Test func jitterSpreadsTheReopenedTime() {
        var breaker = self.breaker { $0.failureThreshold = 1; $0.recoveryTimeout = .seconds(10) }
        breaker.record(.failure, probe: false, now: self.start)
        let now = self.at(.seconds(10))
        _ = breaker.admit(now: now)
        #expect({ breaker.record(.failure, probe: true, now: now, jitter: 0.9) }() == .open(until: now + .seconds(18)))
    }

    @Test func staleOutcomesAreIgnoredWhileOpen() {
        var breaker = self.breaker { $0.failureThreshold = 1 }
        breaker.record(.failure, probe: false, now: self.start)
        #expect({ breaker.record(.success, probe: false, now: self.start) }() == nil)
        #expect(breaker.state == .open(until: self.at(.seconds(30))))
    }

    @Test func aReleasedProbeFreesItsSlot() {
        var breaker = self.breaker { $0.failureThreshold = 1 }
        breaker.record(.failure, probe: false, now: self.start)
        let later = self.at(.seconds(30))
        #expect({ breaker.admit(now: later) }() == .admitted(probe: true))
        breaker.release(probe: true)
        #expect({ breaker.admit(now: later) }() == .admitted(probe: true))
    }
}
