@testable import Breakwater
import Foundation
import NIOCore
import NIOPosix
import Testing

/// Readiness gating and the drain, in process.
@Suite struct LifecycleTests {
    private static let readiness = "[readiness]\npath = \"/status/200\"\nhold = \"2s\"\n"

    @Test func requestsWaitForTheAppAndGoTheMomentItIsReady() async throws {
        let lifecycle = Lifecycle(appReadyAtStart: false)
        try await ProxyHarness.with(configuration: Self.readiness, lifecycle: lifecycle) { proxy in
            async let held = proxy.request(get("/status/200"))
            try await eventually { proxy.lifecycle.requestsInFlight.load(ordering: .relaxed) == 1 }
            try await Task.sleep(for: .milliseconds(300))
            #expect(proxy.backend.requestsReceived.isEmpty)
            let released = ContinuousClock.now
            lifecycle.setAppReady(true)
            let response = try await held
            #expect(response.status == 200)
            #expect(ContinuousClock.now - released < .milliseconds(1500))
        }
    }

    @Test func aRequestHeldPastTheHoldGets503NotReady() async throws {
        let lifecycle = Lifecycle(appReadyAtStart: false)
        let configuration = "[readiness]\npath = \"/status/200\"\nhold = \"300ms\"\n"
        try await ProxyHarness.with(configuration: configuration, lifecycle: lifecycle) { proxy in
            let started = ContinuousClock.now
            let response = try await proxy.request(get("/status/200"))
            let waited = ContinuousClock.now - started
            #expect(response.status == 503)
            #expect(response.header("x-breakwater-reason") == "not_ready")
            #expect(response.header("retry-after") != nil)
            #expect(waited >= .milliseconds(280) && waited < .milliseconds(1500))
            #expect(proxy.backend.requestsReceived.isEmpty)
        }
    }

    @Test func theProbeTellsAHealthyAppFromAnUnhealthyOne() async throws {
        let backend = try await BackendFixture.start()
        let target = try SocketAddress(ipAddress: "127.0.0.1", port: backend.port)
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        #expect(await HealthProbe.check(target: target, path: "/status/204", timeout: .seconds(1), eventLoop: eventLoop) == .healthy)
        #expect(await HealthProbe.check(target: target, path: "/status/500", timeout: .seconds(1), eventLoop: eventLoop) == .answered(status: 500))
        #expect(await HealthProbe.check(target: target, path: "/status/301", timeout: .seconds(1), eventLoop: eventLoop) == .answered(status: 301))
        let started = ContinuousClock.now
        #expect(await HealthProbe.check(target: target, path: "/hang", timeout: .milliseconds(300), eventLoop: eventLoop) == .noAnswer)
        #expect(ContinuousClock.now - started < .seconds(5))
        try await backend.shutdown()
        #expect(await HealthProbe.check(target: target, path: "/status/200", timeout: .seconds(1), eventLoop: eventLoop) == .noAnswer)
    }

    @Test func theTrackerNeedsItsStreaks() {
        var tracker = ReadinessTracker(healthyThreshold: 2, unhealthyThreshold: 3)
        #expect(tracker.record(healthy: true) == nil)
        #expect(tracker.record(healthy: true) == true)
        #expect(tracker.record(healthy: false) == nil)
        #expect(tracker.record(healthy: true) == nil)
        #expect(tracker.record(healthy: false) == nil)
        #expect(tracker.record(healthy: false) == nil)
        #expect(tracker.record(healthy: false) == false)
        #expect(!tracker.isReady)
    }

    @Test func aShutdownLetsRequestsInFlightFinish() async throws {
        try await ProxyHarness.with { proxy in
            async let inFlight = proxy.request(get("/delay/500"))
            try await eventually { proxy.backend.requestCount(pathPrefix: "/delay/") == 1 }
            let cut = try await proxy.proxy.shutdown(gracePeriod: .seconds(5))
            #expect(cut == 0)
            #expect(try await inFlight.status == 200)
            // The listener is closed.
            await #expect(throws: (any Error).self) { _ = try await RawClient.connect(port: proxy.port) }
        }
    }

    /// A drain closes idle keep-alive connections at once, and a busy one right after its
    /// answer, which says `Connection: close`: nothing waits for the grace period.
    @Test func aDrainClosesIdleKeepAliveConnectionsAndEndsBusyOnesAfterTheirAnswer() async throws {
        try await ProxyHarness.with { proxy in
            let idle = try await proxy.connect()
            try await idle.send(get("/status/200"))
            #expect(try await idle.readResponse().status == 200)
            let busy = try await proxy.connect()
            try await busy.send(get("/delay/400"))
            try await eventually { proxy.backend.requestCount(pathPrefix: "/delay/") == 1 }

            let started = ContinuousClock.now
            async let cut = proxy.proxy.shutdown(gracePeriod: .seconds(20))
            #expect(try await idle.waitForClose(timeout: .seconds(5)))
            let answer = try await busy.readResponse()
            #expect(answer.status == 200)
            #expect(answer.header("connection") == "close")
            #expect(try await busy.waitForClose(timeout: .seconds(5)))
            #expect(try await cut == 0)
            // The busy connection lingers up to 2 s for its client to close (`LingeringClose`);
            // the grace period is ten times that.
            #expect(ContinuousClock.now - started < .seconds(8))
        }
    }

    /// A head that is still arriving when the drain starts is a request too: it is answered
    /// (saying `Connection: close`), not dropped with the idle connections.
    @Test func aRequestArrivingWhenTheDrainStartsIsAnswered() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send("GET /status/201 HTTP/1.1\r\nHo")
            try await Task.sleep(for: .milliseconds(100))
            async let cut = proxy.proxy.shutdown(gracePeriod: .seconds(10))
            try await eventually { proxy.lifecycle.currentPhase == .stopping }
            try await Task.sleep(for: .milliseconds(100))  // the quiesce event reaches the connection's loop
            try await client.send("st: x\r\n\r\n")
            let answer = try await client.readResponse()
            #expect(answer.header("connection") == "close")
            #expect([201, 503].contains(answer.status), "\(answer.status)")
            #expect(try await client.waitForClose(timeout: .seconds(5)))
            #expect(try await cut == 0)
        }
    }

    @Test func aHungRequestCannotHoldTheDrainPastItsTimeout() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send(get("/hang"))
            try await eventually { proxy.backend.requestCount(pathPrefix: "/hang") == 1 }
            let started = ContinuousClock.now
            let cut = try await proxy.proxy.shutdown(gracePeriod: .milliseconds(500))
            #expect(cut == 1)
            #expect(ContinuousClock.now - started < .seconds(2))
            await client.close()
        }
    }

    /// The same worker put in and out of the balance by two threads at once — the supervisor's
    /// probe and an ejection after a failed connect — leaves the readiness gate agreeing with
    /// the balance every time: never shut with the worker in it (every request held until it
    /// times out, for as long as nothing changes), never open with it out.
    @Test func readinessFollowsTheBalanceWhenTwoThreadsMoveAWorkerAtOnce() throws {
        let lifecycle = Lifecycle(appReadyAtStart: false)
        let upstreams = try UpstreamSet(addresses: [.tcp(HostPort(host: "127.0.0.1", port: 1))], supervised: true)
        let worker = upstreams.members[0]
        var disagreements = 0
        for round in 0..<300_000 {
            // Alternating which thread sets which, so either order of the two can be last.
            DispatchQueue.concurrentPerform(iterations: 2) { thread in
                lifecycle.setInstance(worker, of: upstreams, ready: (thread + round) % 2 == 0)
            }
            if lifecycle.isAppReady != upstreams.anyReady {
                disagreements += 1
            }
        }
        #expect(disagreements == 0, "the gate disagreed with the balance after \(disagreements) of 300,000 rounds")
    }
}

@Suite struct PublicReadinessTests {
    @Test func thePublicPathAnswersReadinessOnTheProxyPort() async throws {
        let lifecycle = Lifecycle(appReadyAtStart: false)
        let configuration = "[readiness]\nhold = \"0s\"\npublic_path = \"/__breakwater/ready\"\n"
        try await ProxyHarness.with(configuration: configuration, lifecycle: lifecycle) { proxy in
            let notReady = try await proxy.request(get("/__breakwater/ready"))
            #expect(notReady.status == 503)
            #expect(notReady.bodyString == #"{"ready":false}"#)
            lifecycle.setAppReady(true)
            let ready = try await proxy.request(get("/__breakwater/ready?probe=fly"))
            #expect(ready.status == 200)
            #expect(ready.bodyString == #"{"ready":true}"#)
            // A health check is not a request of the app's: neither counted nor logged (as
            // HAProxy's monitor-uri), or every check would read as the app's answer.
            #expect(!lifecycle.metrics.exposition().contains("breakwater_requests_total{"))
            #expect(try await proxy.request(get("/status/200")).status == 200)
            #expect(lifecycle.metrics.exposition().contains("breakwater_requests_total{"))
            lifecycle.advance(to: .draining)
            #expect(try await proxy.request(get("/__breakwater/ready")).status == 503)
            #expect(proxy.backend.requestsReceived.count == 1)
        }
    }
}
