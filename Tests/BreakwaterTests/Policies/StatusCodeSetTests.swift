@testable import Breakwater
import Testing

@Suite struct StatusCodeSetTests {
    @Test func holdsExactlyTheCodesItWasGiven() {
        let codes = StatusCodeSet([500, 502, 503, 504, 429, 100, 999, 0])
        for code in 0..<1000 {
            #expect(codes.contains(code) == [500, 502, 503, 504, 429, 100, 999, 0].contains(code), "\(code)")
        }
    }

    @Test func codesOutsideThreeDigitsAreNeverMembers() {
        let codes = StatusCodeSet([-1, 1000, 64, 1064])
        #expect(codes.contains(64))
        #expect(!codes.contains(-1))
        #expect(!codes.contains(1000))
        #expect(!codes.contains(1064))
        #expect(!codes.contains(Int.max))
        #expect(!codes.contains(Int.min))
    }

    @Test func aRetryPolicyRetriesTheStatusesItListsAndOnlyWithAttemptsLeft() {
        var configuration = RetryConfig()
        configuration.on = [.reset, .status(429), .status(503)]
        let policy = RetryPolicy(configuration: configuration, routeTimeout: .seconds(1))
        #expect(policy.retries(status: 503))
        #expect(policy.retries(status: 429))
        #expect(!policy.retries(status: 500))
        #expect(!policy.retries(status: 200))
        configuration.attempts = 1
        #expect(!RetryPolicy(configuration: configuration, routeTimeout: .seconds(1)).retries(status: 503))
    }
}
