@testable import Breakwater
import Foundation
import Testing

/// Load shedding: soft and hard limits, the queue, and per-route bulkheads.
@Suite struct AdmissionTests {
    /// Sends `count` requests at once, each on its own connection, and returns each answer
    /// with how long it took.
    /// Whether `breakwater_queued_requests` shows `count` waiting on `route` now.
    private static func queued(_ count: Int, on route: String = "default", in proxy: ProxyHarness) -> Bool {
        proxy.lifecycle.metrics.exposition().contains(#"breakwater_queued_requests{route="\#(route)"} \#(count).0"#)
    }

    private static func concurrently(
        _ count: Int,
        _ path: String,
        to proxy: ProxyHarness
    ) async throws -> [(response: RawResponse, elapsed: Duration)] {
        try await withThrowingTaskGroup(of: (RawResponse, Duration).self) { group in
            for _ in 0..<count {
                group.addTask {
                    let started = ContinuousClock.now
                    let response = try await proxy.request(get(path))
                    return (response, ContinuousClock.now - started)
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
    }

    /// A reload (SIGHUP) keeps counting the requests in flight: with the one slot taken, the
    /// next request is refused, not let through by a fresh set of slots.
    @Test func aReloadKeepsCountingTheRequestsInFlight() async throws {
        let limits = "[concurrency]\nsoft_limit = 1\nhard_limit = 1\n"
        try await ProxyHarness.with(configuration: limits) { proxy in
            let slow = Task { try await proxy.request(get("/delay/1000")) }
            try await eventually { proxy.backend.requestCount(pathPrefix: "/delay/") == 1 }
            let reloaded = try ConfigLoader.parse(
                "listen = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:\(proxy.backend.port)\"\n" + limits + "[log]\naccess = false\n",
                fileName: "reloaded.conf"
            )
            proxy.proxy.reload(configuration: reloaded)
            let refused = try await proxy.request(get("/status/200"))
            #expect(refused.status == 503)
            #expect(refused.header("x-breakwater-reason") == "hard_limit")
            #expect(try await slow.value.status == 200)
            #expect(try await proxy.request(get("/status/200")).status == 200)
        }
    }

    @Test func tenSlowRequestsAgainstSoft2Hard4GiveFourServedAndSixFastRefusals() async throws {
        try await ProxyHarness.with(configuration: "[concurrency]\nsoft_limit = 2\nhard_limit = 4\n") { proxy in
            let results = try await Self.concurrently(10, "/delay/700", to: proxy)
            let served = results.filter { $0.response.status == 200 }
            let refused = results.filter { $0.response.status == 503 }
            #expect(served.count == 4)
            #expect(refused.count == 6)
            // Refusals come at once, not after the queue: every one before any served answer,
            // which takes the app's 700 ms.
            let firstServed = served.map(\.elapsed).min() ?? .zero
            for refusal in refused {
                #expect(refusal.response.header("x-breakwater-reason") == "hard_limit")
                #expect(refusal.response.header("retry-after") != nil)
                #expect(refusal.elapsed < firstServed, "a refusal took \(refusal.elapsed)")
            }
            #expect(proxy.backend.maxConcurrentDelays == 2)
            #expect(proxy.backend.requestCount(pathPrefix: "/delay/") == 4)
        }
    }

    /// A refusal keeps the connection: a client hammering an overloaded proxy is not made to
    /// reconnect for every 503 (and a load tester that never reconnects is not stalled).
    @Test func aShedRequestKeepsItsConnection() async throws {
        try await ProxyHarness.with(configuration: "[concurrency]\nsoft_limit = 1\nhard_limit = 1\n") { proxy in
            async let holder = proxy.request(get("/delay/1500"))
            try await eventually { proxy.backend.requestCount(pathPrefix: "/delay/") == 1 }
            let client = try await proxy.connect()
            for _ in 0..<3 {
                try await client.send(get("/status/200"))
                let refused = try await client.readResponse()
                #expect(refused.status == 503)
                #expect(refused.header("x-breakwater-reason") == "hard_limit")
                #expect(refused.header("connection") == nil)
            }
            #expect(try await client.waitForClose(timeout: .milliseconds(300)) == false)
            #expect(try await holder.status == 200)
        }
    }

    @Test func aQueuedRequestTimesOutOnTime() async throws {
        let configuration = "[concurrency]\nsoft_limit = 1\nhard_limit = 3\nqueue_timeout = \"300ms\"\n"
        try await ProxyHarness.with(configuration: configuration) { proxy in
            async let holder = proxy.request(get("/delay/2000"))
            try await eventually { proxy.backend.requestCount(pathPrefix: "/delay/") == 1 }
            let started = ContinuousClock.now
            let queued = try await proxy.request(get("/status/200"))
            let waited = ContinuousClock.now - started
            #expect(queued.status == 503)
            #expect(queued.header("x-breakwater-reason") == "queue_timeout")
            #expect(waited >= .milliseconds(280) && waited < .milliseconds(1500), "timed out after \(waited)")
            #expect(try await holder.status == 200)
        }
    }

    /// `queue_timeout = "0s"`: no queue; a request that finds no free slot is refused at once.
    @Test func aZeroQueueTimeoutRefusesAtOnce() async throws {
        try await ProxyHarness.with(configuration: "[concurrency]\nsoft_limit = 1\nhard_limit = 2\nqueue_timeout = \"0s\"\n") { proxy in
            async let holder = proxy.request(get("/delay/1500"))
            try await eventually { proxy.backend.requestCount(pathPrefix: "/delay/") == 1 }
            let started = ContinuousClock.now
            let refused = try await proxy.request(get("/status/200"))
            #expect(refused.status == 503)
            #expect(refused.header("x-breakwater-reason") == "queue_timeout")
            #expect(ContinuousClock.now - started < .milliseconds(1000))
            #expect(try await holder.status == 200)
        }
    }

    @Test func aQueuedRequestGetsTheNextFreeSlot() async throws {
        try await ProxyHarness.with(configuration: "[concurrency]\nsoft_limit = 1\nhard_limit = 2\n") { proxy in
            async let holder = proxy.request(get("/delay/1000"))
            try await eventually { proxy.backend.requestCount(pathPrefix: "/delay/") == 1 }
            async let queued = proxy.request(get("/status/201"))
            try await eventually { Self.queued(1, in: proxy) }
            #expect(try await queued.status == 201)
            #expect(try await holder.status == 200)
        }
    }

    @Test func aSlowRoutesBulkheadLeavesOtherRoutesFast() async throws {
        let configuration = """
            [[route]]
            name = "slow"
            path_prefix = "/delay/"
            [route.concurrency]
            soft_limit = 1
            hard_limit = 2
            """
        try await ProxyHarness.with(configuration: configuration) { proxy in
            async let slow = Self.concurrently(5, "/delay/4000", to: proxy)
            try await eventually { proxy.backend.requestCount(pathPrefix: "/delay/") == 1 }
            // Each answer comes well before the slow route's 1 s: nothing waits behind it.
            for _ in 0..<5 {
                let started = ContinuousClock.now
                #expect(try await proxy.request(get("/status/200")).status == 200)
                #expect(ContinuousClock.now - started < .milliseconds(2000))
            }
            let results = try await slow
            #expect(results.filter { $0.response.status == 200 }.count == 2)
            #expect(results.filter { $0.response.header("x-breakwater-reason") == "hard_limit" }.count == 3)
        }
    }

    /// A request waiting in its route's bulkhead holds none of the proxy's slots, which count
    /// requests forwarded to the app, so a slow route's queue cannot take them from the other
    /// routes; it does count toward the proxy's hard limit, which counts every request held.
    @Test func requestsWaitingInABulkheadHoldNoneOfTheProxysSlots() async throws {
        let configuration = """
            [concurrency]
            soft_limit = 2
            hard_limit = 5
            [[route]]
            name = "slow"
            path_prefix = "/delay/"
            [route.concurrency]
            soft_limit = 1
            hard_limit = 3
            queue_timeout = "10s"
            """
        try await ProxyHarness.with(configuration: configuration) { proxy in
            // One slow request at the app, two waiting in the bulkhead.
            async let slow = Self.concurrently(3, "/delay/2000", to: proxy)
            try await eventually { Self.queued(2, on: "slow", in: proxy) }
            // The proxy's second slot is another route's at once.
            let started = ContinuousClock.now
            #expect(try await proxy.request(get("/status/200")).status == 200)
            let waited = ContinuousClock.now - started
            #expect(waited < .milliseconds(1500), "waited \(waited) behind the slow route's queue")
            // Held now: the 3 slow ones. With a slow answer on the other route too, one more
            // request waits for the proxy's slot (5 held), and the next is over the hard limit.
            async let other = proxy.request(get("/flaky/held?fail=1&status=200&delay=2500"))
            try await eventually { proxy.backend.requestCount(pathPrefix: "/flaky/held") == 1 }
            async let waiting = proxy.request(get("/status/201"))
            try await eventually { Self.queued(1, in: proxy) }
            let refused = try await proxy.request(get("/status/202"))
            #expect(refused.status == 503)
            #expect(refused.header("x-breakwater-reason") == "hard_limit")
            #expect(try await waiting.status == 201)
            #expect(try await other.status == 200)
            #expect(try await slow.allSatisfy { $0.response.status == 200 })
        }
    }

    @Test func aClientThatLeavesTheQueueFreesItsPlace() async throws {
        try await ProxyHarness.with(configuration: "[concurrency]\nsoft_limit = 1\nhard_limit = 2\n") { proxy in
            async let holder = proxy.request(get("/delay/1500"))
            try await eventually { proxy.backend.requestCount(pathPrefix: "/delay/") == 1 }
            let leaver = try await proxy.connect()
            try await leaver.send(get("/status/200"))
            try await eventually { Self.queued(1, in: proxy) }
            await leaver.close()
            try await eventually { Self.queued(0, in: proxy) }
            // Its place in the queue is free again: this one waits instead of being refused.
            let next = try await proxy.request(get("/status/202"))
            #expect(next.status == 202)
            #expect(try await holder.status == 200)
            #expect(proxy.backend.requestCount(pathPrefix: "/status/200") == 0)
        }
    }
}
