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

    /// Admits a request that must be a half-open breaker's probe, and returns its ticket.
    private func probe(_ breaker: inout CircuitBreaker, at now: PolicyInstant, sourceLocation: SourceLocation = #_sourceLocation) throws -> CircuitBreaker.Probe {
        let admission = breaker.admit(now: now)
        guard case .admitted(let probe?) = admission else {
            Issue.record("not a probe: \(admission)", sourceLocation: sourceLocation)
            throw CancellationError()
        }
        return probe
    }

    @Test func opensAfterConsecutiveFailures() {
        var breaker = self.breaker { $0.failureThreshold = 3 }
        #expect({ breaker.record(.failure, probe: nil, now: self.start) }() == nil)
        #expect({ breaker.record(.failure, probe: nil, now: self.start) }() == nil)
        #expect({ breaker.record(.failure, probe: nil, now: self.start) }() == .open(until: self.at(.seconds(30))))
        #expect({ breaker.admit(now: self.at(.seconds(10))) }() == .rejected(retryAfter: .seconds(20)))
    }

    /// Looking at a breaker (`advance`, as the admin listener and a scrape do) moves it to
    /// half-open once its recovery time has passed, and not a moment before; the probe slots
    /// are those the next request would have found.
    @Test func advancingAnOpenBreakerMovesItToHalfOpenOnlyOnceItsTimeHasPassed() throws {
        var breaker = self.breaker { $0.failureThreshold = 1; $0.halfOpenRequests = 1 }
        breaker.record(.failure, probe: nil, now: self.start)
        breaker.advance(now: self.at(.seconds(29)))
        #expect(breaker.state == .open(until: self.at(.seconds(30))))
        #expect(breaker.snapshot(now: self.at(.seconds(29))).state == "open")
        breaker.advance(now: self.at(.seconds(30)))
        #expect(breaker.state == .halfOpen)
        #expect(breaker.snapshot(now: self.at(.seconds(30))).probeIn == nil)
        _ = try self.probe(&breaker, at: self.at(.seconds(31)))
        #expect({ breaker.admit(now: self.at(.seconds(31))) }() == .rejected(retryAfter: .seconds(1)))
    }

    @Test func aSuccessBreaksTheStreak() {
        var breaker = self.breaker { $0.failureThreshold = 2; $0.minimumRequests = 100 }
        breaker.record(.failure, probe: nil, now: self.start)
        breaker.record(.success, probe: nil, now: self.start)
        breaker.record(.failure, probe: nil, now: self.start)
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
            breaker.record(index.isMultiple(of: 2) ? .failure : .success, probe: nil, now: self.start)
            #expect(breaker.state == .closed)
        }
        #expect(breaker.record(.success, probe: nil, now: self.start) == nil)  // 3 of 6: 50%, but a success
        #expect({ breaker.record(.failure, probe: nil, now: self.start) }() == .open(until: self.at(.seconds(30))))
    }

    @Test func theWindowForgetsOldOutcomes() {
        var breaker = self.breaker {
            $0.failureThreshold = 100
            $0.failureRate = 0.5
            $0.window = 4
            $0.minimumRequests = 4
        }
        breaker.record(.failure, probe: nil, now: self.start)
        for _ in 0..<4 { breaker.record(.success, probe: nil, now: self.start) }
        // The early failure slid out: one failure in the last four is 25%.
        breaker.record(.failure, probe: nil, now: self.start)
        #expect(breaker.state == .closed)
        let snapshot = breaker.snapshot(now: self.start)
        #expect(snapshot.windowRequests == 4)
        #expect(snapshot.windowFailures == 1)
    }

    @Test func halfOpenLetsLimitedProbesThroughAndClosesOnSuccesses() throws {
        var breaker = self.breaker { $0.failureThreshold = 1; $0.successThreshold = 2; $0.halfOpenRequests = 1 }
        breaker.record(.failure, probe: nil, now: self.start)
        let later = self.at(.seconds(30))
        let first = try self.probe(&breaker, at: later)
        #expect(breaker.state == .halfOpen)
        #expect({ breaker.admit(now: later) }() == .rejected(retryAfter: .seconds(1)))
        #expect({ breaker.record(.success, probe: first, now: later) }() == nil)
        let second = try self.probe(&breaker, at: later)
        #expect({ breaker.record(.success, probe: second, now: later) }() == .closed)
        #expect({ breaker.admit(now: later) }() == .admitted(probe: nil))
    }

    @Test func aFailedProbeReopensForLongerUpToTheMaximum() throws {
        var breaker = self.breaker {
            $0.failureThreshold = 1
            $0.recoveryTimeout = .seconds(10)
            $0.maxRecoveryTimeout = .seconds(35)
        }
        breaker.record(.failure, probe: nil, now: self.start)
        var now = self.at(.seconds(10))
        for expected in [Duration.seconds(20), .seconds(35), .seconds(35)] {
            let probe = try self.probe(&breaker, at: now)
            #expect({ breaker.record(.failure, probe: probe, now: now) }() == .open(until: now + expected))
            now = now + expected
        }
        // Closing brings the base back.
        for _ in 0..<3 {
            let probe = try self.probe(&breaker, at: now)
            breaker.record(.success, probe: probe, now: now)
        }
        #expect(breaker.state == .closed)
        #expect(breaker.recoveryTimeout == .seconds(10))
    }

    @Test func jitterSpreadsTheReopenedTime() throws {
        var breaker = self.breaker { $0.failureThreshold = 1; $0.recoveryTimeout = .seconds(10) }
        breaker.record(.failure, probe: nil, now: self.start)
        let now = self.at(.seconds(10))
        let probe = try self.probe(&breaker, at: now)
        #expect({ breaker.record(.failure, probe: probe, now: now, jitter: 0.9) }() == .open(until: now + .seconds(18)))
    }

    @Test func staleOutcomesAreIgnoredWhileOpen() {
        var breaker = self.breaker { $0.failureThreshold = 1 }
        breaker.record(.failure, probe: nil, now: self.start)
        #expect({ breaker.record(.success, probe: nil, now: self.start) }() == nil)
        #expect(breaker.state == .open(until: self.at(.seconds(30))))
    }

    @Test func aReleasedProbeFreesItsSlot() throws {
        var breaker = self.breaker { $0.failureThreshold = 1 }
        breaker.record(.failure, probe: nil, now: self.start)
        let later = self.at(.seconds(30))
        let probe = try self.probe(&breaker, at: later)
        breaker.release(probe)
        _ = try self.probe(&breaker, at: later)
    }

    /// A probe still out when its half-open spell ended (another probe failed and the breaker
    /// reopened) brings news of the app as it was then: in the next spell its success closes
    /// nothing, and its end frees none of that spell's slots.
    @Test func aProbeFromAnEarlierSpellCountsNothingInALaterOne() throws {
        var breaker = self.breaker { $0.failureThreshold = 1; $0.successThreshold = 1; $0.halfOpenRequests = 2 }
        breaker.record(.failure, probe: nil, now: self.start)
        let firstSpell = self.at(.seconds(30))
        let slow = try self.probe(&breaker, at: firstSpell)
        let failing = try self.probe(&breaker, at: firstSpell)
        #expect({ breaker.record(.failure, probe: failing, now: firstSpell) }() == .open(until: self.at(.seconds(90))))
        let secondSpell = self.at(.seconds(90))
        let current = try self.probe(&breaker, at: secondSpell)
        _ = try self.probe(&breaker, at: secondSpell)
        #expect({ breaker.record(.success, probe: slow, now: secondSpell) }() == nil, "stale news closed the breaker")
        #expect(breaker.state == .halfOpen)
        breaker.release(slow)
        #expect({ breaker.admit(now: secondSpell) }() == .rejected(retryAfter: .seconds(1)), "a third probe in a spell of two")
        #expect({ breaker.record(.success, probe: current, now: secondSpell) }() == .closed)
    }

    /// The same after an operator's reset and a new opening: the earlier probe's end frees no
    /// slot of the new spell.
    @Test func aProbeFromBeforeAResetFreesNoSlotAfterIt() throws {
        var breaker = self.breaker { $0.failureThreshold = 1; $0.halfOpenRequests = 1 }
        breaker.record(.failure, probe: nil, now: self.start)
        let earlier = try self.probe(&breaker, at: self.at(.seconds(30)))
        breaker.close()
        breaker.record(.failure, probe: nil, now: self.at(.seconds(31)))
        let now = self.at(.seconds(61))
        _ = try self.probe(&breaker, at: now)
        breaker.release(earlier)
        #expect({ breaker.admit(now: now) }() == .rejected(retryAfter: .seconds(1)))
    }
}
