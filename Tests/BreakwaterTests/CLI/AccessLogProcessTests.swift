import Foundation
import Testing

/// The access log and diagnostic logs of a running process.
@Suite struct AccessLogProcessTests {
    /// Listeners on ports the system picks, in front of `backend`; `rest` is appended.
    private static func configuration(_ backend: BackendFixture, _ rest: String = "") -> String {
        "listen = \"127.0.0.1:0\"\nupstream = \"127.0.0.1:\(backend.port)\"\n[admin]\nlisten = \"127.0.0.1:0\"\n" + rest
    }

    @Test func oneJSONLinePerRequestCarriesTheRequestsIdentity() async throws {
        let backend = try await BackendFixture.start()
        let breakwater = try await BreakwaterProcess(configuration: Self.configuration(backend, """
            [log]
            access = true
            level = "debug"
            [[route]]
            name = "broken"
            path = "/close"
            [route.retry]
            attempts = 1
            """))
        let port = try #require(breakwater.port)
        let client = try await RawClient.connect(port: port)
        try await client.send(get("/status/201?x=1", headers: ["X-Request-ID: follow-me-1"]))
        #expect(try await client.readResponse().status == 201)
        try await client.send(get("/close", headers: ["X-Request-ID: follow-me-2"]))
        #expect(try await client.readResponse().status == 502)
        await client.close()
        // A request refused before its head was read: logged too, without method or path.
        let malformed = try await RawClient.connect(port: port)
        try await malformed.send("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        #expect(try await malformed.readResponse().status == 400)
        await malformed.close()

        try await eventually { breakwater.log.contains("follow-me-2\",") && breakwater.log.contains("\"bad_request\"") }
        let lines = breakwater.log.split(separator: "\n").filter { $0.hasPrefix("{") }
        let records = try lines.map { try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        let first = try #require(records.first { $0["request_id"] as? String == "follow-me-1" })
        #expect(first["path"] as? String == "/status/201")
        #expect(first["status"] as? Int == 201)
        #expect(first["reason"] as? String == "ok")
        #expect(first["route"] as? String == "default")
        #expect(first["attempts"] as? Int == 1)
        #expect(first["client"] as? String == "127.0.0.1")
        #expect((first["trace_id"] as? String)?.count == 32)
        #expect(first["bytes_out"] as? Int == "status 201".utf8.count)
        let second = try #require(records.first { $0["request_id"] as? String == "follow-me-2" })
        #expect(second["status"] as? Int == 502)
        #expect(second["reason"] as? String == "upstream_unavailable")
        let refused = try #require(records.first { $0["reason"] as? String == "bad_request" })
        #expect(refused["status"] as? Int == 400)
        #expect(refused["method"] is NSNull)
        #expect(refused["path"] is NSNull)
        #expect(refused["route"] as? String == "default")
        #expect(refused["client"] as? String == "127.0.0.1")
        #expect((refused["request_id"] as? String)?.count == 32)
        // The diagnostic line about the failure names the same request.
        #expect(breakwater.log.split(separator: "\n").contains { $0.contains("attempt failed") && $0.contains("request_id=follow-me-2") })

        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(5)) == 0)
        try await backend.shutdown()
    }

    /// An app that answers its readiness probe with something other than a 2xx (a Host check's
    /// 400, a trailing slash's 301) is never ready, and holds every request until it is
    /// refused: the log says why, once per status rather than at every probe.
    @Test func aProbeTheAppAnswersWithoutA2xxIsLoggedWithItsStatus() async throws {
        let backend = try await BackendFixture.start()
        let breakwater = try await BreakwaterProcess(configuration: Self.configuration(backend, """
            [readiness]
            path = "/status/400"
            interval = "100ms"
            """))
        try await eventually { breakwater.log.contains("readiness probe answered 400, not 2xx") }
        try await Task.sleep(for: .milliseconds(500))
        #expect(breakwater.log.components(separatedBy: "readiness probe answered 400").count == 2, "\(breakwater.log)")
        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(5)) == 0)
        try await backend.shutdown()
    }

    /// A log shipper on stdout restarts, and the pipe's reader is gone: the proxy loses log
    /// lines, not its life or its requests.
    @Test func anAccessLogNobodyReadsCostsLinesNotRequests() async throws {
        let backend = try await BackendFixture.start()
        let breakwater = try await BreakwaterProcess(configuration: Self.configuration(backend), standardOutputReaderGone: true)
        let port = try #require(breakwater.port)
        for round in 0..<3 {
            let client = try await RawClient.connect(port: port)
            try await client.send(get("/status/200"))
            #expect(try await client.readResponse().status == 200, "round \(round)")
            await client.close()
            // Time for the log thread to try its write.
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(breakwater.process.isRunning, "\(breakwater.log)")
        // The lost lines show in the metrics, once the log thread has tried every write.
        let admin = try #require(breakwater.adminPort)
        try await eventually {
            try await RawClient.request(port: admin, get("/metrics")).bodyString.contains("breakwater_access_log_dropped_total 3")
        }
        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(5)) == 0)
        try await backend.shutdown()
    }
}
