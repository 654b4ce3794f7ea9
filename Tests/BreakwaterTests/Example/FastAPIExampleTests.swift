import Foundation
import NIOCore
import NIOPosix
import Testing

/// Whether the example's Python requirements can be imported here.
let fastAPIRequirementsInstalled: Bool = {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", "-c", "import fastapi, uvicorn"]
    process.standardError = FileHandle.nullDevice
    guard (try? process.run()) != nil else { return false }
    process.waitUntilExit()
    return process.terminationStatus == 0
}()

/// `examples/fastapi` end to end: Breakwater supervising the real uvicorn app, with its own
/// proxy.conf (ports changed so tests can run anywhere). Needs the example's requirements
/// (`pip install -r examples/fastapi/requirements.txt`, which `.ci/run` does).
@Suite(.serialized, .enabled(if: fastAPIRequirementsInstalled, "pip install -r examples/fastapi/requirements.txt"))
struct FastAPIExampleTests {
    private static var exampleDirectory: String {
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { root.deleteLastPathComponent() }
        return root.appendingPathComponent("examples/fastapi").path
    }

    private static func start() async throws -> BreakwaterProcess {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
        let appPort = channel.localAddress!.port!
        try await channel.close()
        var text = try String(contentsOfFile: Self.exampleDirectory + "/proxy.conf", encoding: .utf8)
        for (from, to) in [
            (#"listen   = "0.0.0.0:8080""#, #"listen = "127.0.0.1:0""#),
            (#"listen = "0.0.0.0:9901""#, #"listen = "127.0.0.1:0""#),
            ("base_port       = 8000", "base_port = \(appPort)"),
            (#"delay   = "2s""#, #"delay = "0s""#),
        ] {
            #expect(text.contains(from), "the example's proxy.conf changed: \(from)")
            text = text.replacingOccurrences(of: from, with: to)
        }
        let breakwater = try await BreakwaterProcess(
            configuration: text,
            environment: ["BREAKWATER_ADMIN_TOKEN": "example-token"],
            directory: Self.exampleDirectory
        )
        try await eventually(timeout: .seconds(20)) { breakwater.log.contains("app ready") }
        return breakwater
    }

    private static func request(_ port: Int, _ raw: String) async throws -> (RawResponse, Duration) {
        let client = try await RawClient.connect(port: port)
        defer { Task { await client.close() } }
        let started = ContinuousClock.now
        try await client.send(raw)
        return (try await client.readResponse(timeout: .seconds(20)), ContinuousClock.now - started)
    }

    private static func post(_ path: String, body: String = "", headers: [String] = []) -> String {
        "POST \(path) HTTP/1.1\r\nHost: example\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n"
            + headers.map { $0 + "\r\n" }.joined() + "\r\n" + body
    }

    @Test func theExampleSurvivesWhatItIsFor() async throws {
        let breakwater = try await Self.start()
        let port = try #require(breakwater.port)
        let admin = try #require(breakwater.adminPort)

        // Normal traffic.
        let (items, _) = try await Self.request(port, get("/api/items"))
        #expect(items.status == 200)
        #expect(items.bodyString.contains("anchor"))
        let (hook, _) = try await Self.request(port, Self.post("/api/v1/webhooks/stripe", body: #"{"id":"evt_1"}"#))
        #expect(hook.status == 202)

        // A slow dependency times out on its route only.
        async let slow = Self.request(port, get("/api/report?delay=3"))
        try await breakwater.waitUntilInFlight(1, route: "reports")
        let (fast, fastTook) = try await Self.request(port, get("/api/items"))
        #expect(fast.status == 200)
        #expect(fastTook < .seconds(1))
        let (timedOut, took) = try await slow
        #expect(timedOut.status == 504)
        #expect(timedOut.header("x-breakwater-reason") == "upstream_timeout")
        #expect(took >= .milliseconds(1900) && took < .seconds(6))  // the app would answer 200 at 3 s

        // Overload of the slow route is shed by its bulkhead (soft 4, hard 8).
        let shed = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<14 { group.addTask { try await Self.request(port, get("/api/report?delay=1")).0.status } }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(shed.filter { $0 == 200 }.count >= 4)
        #expect(shed.filter { $0 == 503 }.count >= 4, "\(shed)")

        // A crash of uvicorn is survived: no request of a steady load is lost.
        let pid = try #require(Int32(try await Self.request(port, get("/api/pid")).0.bodyString.filter(\.isNumber)))
        let statuses = try await withThrowingTaskGroup(of: [Int].self) { group in
            for _ in 0..<3 {
                group.addTask {
                    var statuses: [Int] = []
                    let end = ContinuousClock.now + .seconds(5)
                    while ContinuousClock.now < end {
                        statuses.append(try await Self.request(port, get("/api/items")).0.status)
                    }
                    return statuses
                }
            }
            try await Task.sleep(for: .milliseconds(800))
            kill(pid, SIGKILL)
            return try await group.reduce(into: []) { $0 += $1 }
        }
        print("kill -9 of uvicorn under load: \(statuses.count) requests, \(statuses.filter { $0 != 200 }.count) lost")
        #expect(statuses.count > 20)
        #expect(statuses.allSatisfy { $0 == 200 }, "lost: \(statuses.filter { $0 != 200 })")
        let newPID = try await Self.request(port, get("/api/pid")).0.bodyString
        #expect(!newPID.contains(String(pid)))

        // A failing endpoint opens its route's breaker; the fallback answers meanwhile.
        #expect(try await Self.request(port, Self.post("/api/admin/fail?on=true")).0.status == 200)
        for _ in 0..<5 {
            #expect(try await Self.request(port, get("/api/flaky")).0.status == 500)
        }
        let (fallback, _) = try await Self.request(port, get("/api/flaky"))
        #expect(fallback.status == 503)
        #expect(fallback.header("x-breakwater-reason") == "breaker_open")
        #expect(fallback.bodyString.contains("temporarily unavailable"))
        // Webhooks are another route: unharmed.
        #expect(try await Self.request(port, Self.post("/api/v1/webhooks/github", body: "{}")).0.status == 202)
        let (reset, _) = try await Self.request(admin, Self.post("/admin/circuit-breakers/api/reset", headers: ["Authorization: Bearer example-token"]))
        #expect(reset.status == 200)
        #expect(try await Self.request(port, Self.post("/api/admin/fail?on=false")).0.status == 200)
        #expect(try await Self.request(port, get("/api/flaky")).0.status == 200)

        // SIGINT drains with nothing lost, then stops uvicorn and exits 0.
        let drained = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<4 { group.addTask { try await Self.request(port, get("/api/report?delay=0.8")).0.status } }
            try await breakwater.waitUntilInFlight(4, route: "reports")
            breakwater.signal(SIGINT)
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(drained == [200, 200, 200, 200])
        #expect(await breakwater.waitForExit(timeout: .seconds(15)) == 0, "\(breakwater.log)")
        #expect(breakwater.log.contains("Finished server process"), "uvicorn was not stopped cleanly")
    }
}
