@testable import Breakwater
import Testing

@Suite struct RetryBudgetTests {
    private let start = PolicyInstant(nanoseconds: 5_000_000_000_000)

    @Test func aQuietRouteMayStillRetryUpToTheFloor() {
        var budget = RetryBudget(ratio: 0.2, minimumRetries: 3)
        budget.recordRequest(now: self.start)
        #expect({ budget.tryAcquireRetry(now: self.start) }())
        #expect({ budget.tryAcquireRetry(now: self.start) }())
        #expect({ budget.tryAcquireRetry(now: self.start) }())
        #expect(!{ budget.tryAcquireRetry(now: self.start) }())
    }

    /// Asking takes nothing: only a retry that goes ahead is charged.
    @Test func askingWhetherARetryIsLeftTakesNone() {
        var budget = RetryBudget(ratio: 0, minimumRetries: 1)
        #expect(budget.hasRetryLeft(now: self.start))
        #expect(budget.hasRetryLeft(now: self.start))
        #expect({ budget.tryAcquireRetry(now: self.start) }())
        #expect(!budget.hasRetryLeft(now: self.start))
    }

    @Test func retriesStayUnderTheShareOfRequests() {
        var budget = RetryBudget(ratio: 0.2, minimumRetries: 0)
        for _ in 0..<100 { budget.recordRequest(now: self.start) }
        var granted = 0
        while budget.tryAcquireRetry(now: self.start) { granted += 1 }
        #expect(granted == 20)
    }

    @Test func theWindowSlides() {
        var budget = RetryBudget(ratio: 0.5, minimumRetries: 0)
        for _ in 0..<10 { budget.recordRequest(now: self.start) }
        // Two of the five the ten requests allow, leaving three, which a running total would
        // still hand out below.
        for _ in 0..<2 { #expect({ budget.tryAcquireRetry(now: self.start) }()) }
        // Ten seconds on, the old requests and retries have left the window.
        let later = self.start + .seconds(10)
        #expect(!{ budget.tryAcquireRetry(now: later) }())
        budget.recordRequest(now: later)
        budget.recordRequest(now: later)
        #expect({ budget.tryAcquireRetry(now: later) }())
        #expect(!{ budget.tryAcquireRetry(now: later) }())
    }
}

@Suite struct BackoffTests {
    private let backoff = Backoff(base: .milliseconds(25), max: .milliseconds(250))

    @Test func theCeilingDoublesUpToTheMaximum() {
        #expect(self.backoff.ceiling(forRetry: 1) == .milliseconds(25))
        #expect(self.backoff.ceiling(forRetry: 2) == .milliseconds(50))
        #expect(self.backoff.ceiling(forRetry: 4) == .milliseconds(200))
        #expect(self.backoff.ceiling(forRetry: 5) == .milliseconds(250))
        #expect(self.backoff.ceiling(forRetry: 500) == .milliseconds(250))
    }

    @Test func fullJitterSpansZeroToTheCeiling() {
        #expect(self.backoff.delay(forRetry: 2, random: 0) == .zero)
        #expect(self.backoff.delay(forRetry: 2, random: 0.5) == .milliseconds(25))
        #expect(self.backoff.delay(forRetry: 3, random: 0.999) < .milliseconds(100))
    }
}
