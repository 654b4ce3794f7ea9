@testable import Breakwater
import Foundation
import NIOConcurrencyHelpers
import Logging
import NIOCore
import NIOPosix
import Testing

/// The admin listener over real sockets, beside a proxy.
@Suite struct AdminTests {
    /// Runs `body` with an admin listener for `proxy`; its token variable is unique to the test.
    private static func withAdmin(
        _ proxy: ProxyHarness,
        token: String?,
        server: ServerConfig = ServerConfig(),
        _ body: (_ port: Int) async throws -> Void
    ) async throws {
        let variable = "BREAKWATER_TEST_TOKEN_\(UUID().uuidString.prefix(8))"
        if let token { setenv(variable, token, 1) }
        defer { unsetenv(variable) }
        let service = AdminService(
            configuration: AdminConfig(listen: HostPort(host: "127.0.0.1", port: 0), tokenEnv: variable),
            server: server,
            lifecycle: proxy.lifecycle,
            routes: { [server = proxy.proxy] in server.routes },
            logger: Logger(label: "admin-test")
        )
        let channel = try await service.bind(on: MultiThreadedEventLoopGroup.singleton)
        do {
            try await body(channel.localAddress!.port!)
        } catch {
            try? await channel.close()
            throw error
        }
        try await channel.close()
    }

    private static func request(_ port: Int, _ raw: String) async throws -> RawResponse {
        try await RawClient.request(port: port, raw)
    }


    @Test func healthEndpointsAnswer() async throws {
        let lifecycle = Lifecycle(appReadyAtStart: false)
        try await ProxyHarness.with(lifecycle: lifecycle) { proxy in
            try await Self.withAdmin(proxy, token: nil) { port in
                #expect(try await Self.request(port, get("/health/live")).status == 200)
                let notReady = try await Self.request(port, get("/health/ready"))
                #expect(notReady.status == 503)
                #expect(notReady.bodyString.contains("app not ready"))
                lifecycle.setAppReady(true)
                #expect(try await Self.request(port, get("/health/ready")).status == 200)
                lifecycle.advance(to: .draining)
                let draining = try await Self.request(port, get("/health/ready"))
                #expect(draining.status == 503)
                #expect(draining.bodyString.contains("draining"))
                let metrics = try await Self.request(port, get("/metrics"))
                #expect(metrics.status == 200)
                #expect(metrics.header("content-type")?.hasPrefix("text/plain; version=0.0.4") == true)
                #expect(try await Self.request(port, get("/nope")).status == 404)
                // An answer to HEAD has no body, or a kept-alive client reads it as the next one.
                let client = try await RawClient.connect(port: port)
                try await client.send("HEAD /health/live HTTP/1.1\r\nHost: a\r\n\r\n" + get("/health/live"))
                let answerToHead = try await client.readResponse(forHead: true)
                #expect(answerToHead.status == 200)
                #expect((answerToHead.header("content-length").flatMap { Int($0) } ?? 0) > 0)
                let next = try await client.readResponse()
                #expect(next.status == 200)
                #expect(next.bodyString.contains("live"))
                await client.close()
                let wrongMethod = try await Self.request(port, post("/metrics"))
                #expect(wrongMethod.status == 405)
                #expect(wrongMethod.header("allow") == "GET")
                #expect(try await Self.request(port, get("/admin/drain")).header("allow") == "POST")
            }
        }
    }

    @Test func postsNeedTheRightToken() async throws {
        try await ProxyHarness.with { proxy in
            try await Self.withAdmin(proxy, token: "s3cret") { port in
                let status1 = try await Self.request(port, post("/admin/drain")).status
                #expect(status1 == 401)
                let status2 = try await Self.request(port, post("/admin/drain", token: "wrong!")).status
                #expect(status2 == 401)
                let status3 = try await Self.request(port, post("/admin/drain", token: "s3cre")).status
                #expect(status3 == 401)
                let status4 = try await Self.request(port, post("/admin/circuit-breakers/default/reset", token: "wrong!")).status
                #expect(status4 == 401)
                let status5 = try await Self.request(port, post("/admin/circuit-breakers/nope/reset", token: "s3cret")).status
                #expect(status5 == 404)
                // The scheme's name is case-insensitive (RFC 9110 §11.1).
                let lowercase = "POST /admin/circuit-breakers/nope/reset HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nAuthorization: bearer s3cret\r\n\r\n"
                #expect(try await Self.request(port, lowercase).status == 404)
                let schemeOnly = "POST /admin/drain HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nAuthorization: Bearer \r\n\r\n"
                #expect(try await Self.request(port, schemeOnly).status == 401)
            }
            try await Self.withAdmin(proxy, token: nil) { port in
                let status6 = try await Self.request(port, post("/admin/drain", token: "anything")).status
                #expect(status6 == 403)
            }
        }
    }

    @Test func aBreakerCanBeReadAndReset() async throws {
        try await ProxyHarness.withOpenBreaker { proxy in
            try await Self.withAdmin(proxy, token: "t") { port in
                let breakers = try await Self.request(port, get("/health/circuit-breakers"))
                let json = try JSONSerialization.jsonObject(with: Data(breakers.body)) as? [String: Any]
                let routes = json?["routes"] as? [[String: Any]] ?? []
                let switchable = routes.first { $0["route"] as? String == "switchable" }
                #expect(switchable?["state"] as? String == "open")
                #expect((switchable?["probe_in_seconds"] as? Double ?? 0) > 25)
                #expect(routes.first { $0["route"] as? String == "default" }?["state"] as? String == "closed")

                #expect(try await proxy.request(get("/switchable")).header("x-breakwater-reason") == "breaker_open")
                let status7 = try await Self.request(port, post("/admin/circuit-breakers/switchable/reset", token: "t")).status
                #expect(status7 == 200)
                proxy.backend.setFailing(false)
                #expect(try await proxy.request(get("/switchable")).status == 200)
            }
        }
    }

    @Test func adminDrainTriggersTheDrain() async throws {
        try await ProxyHarness.with { proxy in
            let requested = NIOLockedValueBoxForTests(false)
            proxy.lifecycle.onDrainRequested { requested.set(true) }
            try await Self.withAdmin(proxy, token: "t") { port in
                let status8 = try await Self.request(port, post("/admin/drain", token: "t")).status
                #expect(status8 == 202)
                #expect(requested.get())
            }
        }
    }

    /// The admin listener reads requests as the proxy does: a head within
    /// `header_read_timeout`, or a 408; a connection that sends nothing is closed.
    @Test func aSlowAdminClientIsCutOffOnTime() async throws {
        var server = ServerConfig()
        server.headerReadTimeout = .seconds(1)
        try await ProxyHarness.with { proxy in
            try await Self.withAdmin(proxy, token: nil, server: server) { port in
                let silent = try await RawClient.connect(port: port)
                let slow = try await RawClient.connect(port: port)
                try await slow.send("GET /metrics HTTP/1.1\r\nHost: a")
                let answer = try await slow.readResponse(timeout: .seconds(10))
                #expect(answer.status == 408)
                #expect(try await silent.waitForClose(timeout: .seconds(10)))
                #expect(try await Self.request(port, get("/health/live")).status == 200)
            }
        }
    }

    /// Connections beyond the admin listener's cap are closed as they come, so that they cannot
    /// take the descriptors the proxy needs; those within it are served.
    @Test func aFloodOfAdminConnectionsIsCapped() async throws {
        try await ProxyHarness.with { proxy in
            try await Self.withAdmin(proxy, token: nil) { port in
                var clients: [RawClient] = []
                for _ in 0..<100 {
                    clients.append(try await RawClient.connect(port: port))
                }
                let open = await RawClient.stillOpen(clients, settlingAt: AdminService.maxConnections)
                #expect(open.count == AdminService.maxConnections)
                for client in open.prefix(3) {
                    try await client.send(get("/health/live"))
                    #expect(try await client.readResponse().status == 200)
                }
                for client in clients { await client.close() }
                try await eventually {
                    (try? await Self.request(port, get("/health/live")))?.status == 200
                }
            }
        }
    }

    /// A client that pipelines requests for `/metrics` and reads none of the answers stops being
    /// read, instead of having answers pile up in the proxy's memory.
    @Test func aPipeliningAdminClientThatNeverReadsIsNotBufferedWithoutBound() async throws {
        try await ProxyHarness.with { proxy in
            try await Self.withAdmin(proxy, token: nil) { port in
                let size = try await Self.request(port, get("/metrics")).body.count
                let hog = try await RawClient.connect(port: port, autoRead: false)
                let sent = 100_000
                let memoryBefore = residentMemoryBytes()
                let sending = Task { try? await hog.send(String(repeating: get("/metrics"), count: sent)) }
                defer { sending.cancel() }
                try await Task.sleep(for: .seconds(5))
                let growth = residentMemoryBytes() - memoryBefore
                // Unbounded, the answers alone would take `sent` × `size` bytes.
                #expect(growth < 64 << 20, "memory grew by \(growth >> 20) MB; \(sent) answers are \((sent * size) >> 20) MB")
                #expect(sent * size > 128 << 20, "the answers (\(size) bytes each) are too small for this test to tell")
                await hog.close()
                #expect(try await Self.request(port, get("/health/live")).status == 200)
            }
        }
    }

    @Test func theAdminListenerAnswersWhileTheProxyIsOverloaded() async throws {
        let configuration = "[concurrency]\nsoft_limit = 2\nhard_limit = 4\n"
        try await ProxyHarness.with(configuration: configuration) { proxy in
            try await Self.withAdmin(proxy, token: nil) { port in
                try await withThrowingTaskGroup(of: Int.self) { group in
                    for _ in 0..<200 {
                        group.addTask { try await proxy.request(get("/delay/500")).status }
                    }
                    for _ in 0..<5 {
                        let started = ContinuousClock.now
                        #expect(try await Self.request(port, get("/health/live")).status == 200)
                        #expect(ContinuousClock.now - started < .seconds(2))
                    }
                    let statuses = try await group.reduce(into: [Int]()) { $0.append($1) }
                    // 200 connects take a while: slots freed meanwhile serve a few more.
                    #expect(statuses.filter { $0 == 200 }.count >= 4)
                    #expect(statuses.filter { $0 == 503 }.count >= 150)
                    #expect(statuses.count == 200)
                    #expect(proxy.backend.maxConcurrentDelays <= 2)
                }
            }
        }
    }
}

/// A Bool that closures on any thread may set.
final class NIOLockedValueBoxForTests: Sendable {
    private let box: NIOLockedValueBox<Bool>
    init(_ value: Bool) { self.box = NIOLockedValueBox(value) }
    func set(_ value: Bool) { self.box.withLockedValue { $0 = value } }
    func get() -> Bool { self.box.withLockedValue { $0 } }
}

/// An empty POST, with a bearer token when given.
private func post(_ path: String, token: String? = nil) -> String {
    "POST \(path) HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n" + (token.map { "Authorization: Bearer \($0)\r\n" } ?? "") + "\r\n"
}
