@testable import Breakwater
import Testing

@Suite struct RetryPolicyTests {
    private func policy(_ configure: (inout RetryConfig) -> Void = { _ in }) -> RetryPolicy {
        var configuration = RetryConfig()
        configure(&configuration)
        return RetryPolicy(configuration: configuration, routeTimeout: .seconds(1))
    }

    private func delay(
        _ policy: RetryPolicy,
        _ failure: RetryPolicy.Failure,
        attemptsMade: Int = 1,
        idempotent: Bool = true,
        replayable: Bool = true,
        elapsed: Duration = .zero
    ) -> Duration? {
        policy.delayBeforeRetry(
            after: failure,
            attemptsMade: attemptsMade,
            isIdempotent: idempotent,
            bodyReplayable: replayable,
            elapsed: elapsed,
            random: 0.5
        )
    }

    @Test func retriesOnlyTheListedConditions() {
        let policy = self.policy()
        #expect(self.delay(policy, .reset) == .microseconds(12_500))
        #expect(self.delay(policy, .status(503)) != nil)
        #expect(self.delay(policy, .status(500)) == nil)
        #expect(self.delay(policy, .timeout) == nil)
    }

    /// Whatever `on` lists: the same request would most likely get the same broken answer.
    @Test func aMalformedResponseIsNeverRetried() {
        let policy = self.policy { $0.on = [.connectFailure, .reset, .timeout, .status(502)] }
        #expect(self.delay(policy, .malformedResponse) == nil)
    }

    @Test func stopsAfterTheAttempts() {
        let policy = self.policy { $0.attempts = 3 }
        #expect(self.delay(policy, .reset, attemptsMade: 2) == .milliseconds(25))
        #expect(self.delay(policy, .reset, attemptsMade: 3) == nil)
        #expect(self.delay(self.policy { $0.attempts = 1 }, .connectFailure) == nil)
    }

    @Test func aNonIdempotentRequestIsRetriedOnlyWhenItNeverLeft() {
        let policy = self.policy()
        #expect(self.delay(policy, .reset, idempotent: false) == nil)
        #expect(self.delay(policy, .status(503), idempotent: false) == nil)
        #expect(self.delay(policy, .connectFailure, idempotent: false) != nil)
    }

    @Test func aBodyNoLongerHeldIsNotSentAgain() {
        let policy = self.policy()
        #expect(self.delay(policy, .reset, replayable: false) == nil)
        #expect(self.delay(policy, .connectFailure, replayable: false) != nil)
    }

    @Test func noRetryEndsPastTheRouteTimeout() {
        let policy = self.policy()
        #expect(self.delay(policy, .reset, elapsed: .milliseconds(980)) != nil)
        #expect(self.delay(policy, .reset, elapsed: .milliseconds(995)) == nil)
    }

    @Test func retriedTimeoutsShareTheRouteTimeout() {
        #expect(self.policy().attemptTimeout == .seconds(1))
        #expect(self.policy { $0.on = [.timeout]; $0.attempts = 4 }.attemptTimeout == .milliseconds(250))
    }

    /// Which attempts a timeout could be retried after, and so get only their share.
    @Test func aTimeoutMayBeRetriedOnlyAfterAnAttemptARetryCouldFollow() {
        let policy = self.policy { $0.on = [.timeout]; $0.attempts = 3 }
        func may(_ attemptsMade: Int, idempotent: Bool = true, replayable: Bool = true) -> Bool {
            policy.mayRetry(.timeout, attemptsMade: attemptsMade, isIdempotent: idempotent, bodyReplayable: replayable)
        }
        #expect(may(1) && may(2))
        #expect(!may(3), "the last attempt")
        #expect(!may(1, idempotent: false))
        #expect(!may(1, replayable: false))
        #expect(!self.policy().mayRetry(.timeout, attemptsMade: 1, isIdempotent: true, bodyReplayable: true), "timeouts not in `on`")
    }
}
