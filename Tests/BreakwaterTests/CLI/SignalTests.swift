import Foundation
import Testing

/// Draining, exiting and reloading, as the process does them on signals.
@Suite(.serialized) struct SignalTests {
    /// - Parameter drainTimeout: short where a test waits it out; long where a test shows the
    ///   drain ends before it, so that a loaded machine cannot blur the two.
    private static func configuration(upstream: Int, drainTimeout: String = "2s", extra: String = "") -> String {
        """
        listen = "127.0.0.1:0"
        upstream = "127.0.0.1:\(upstream)"
        [admin]
        listen = "127.0.0.1:0"
        [log]
        level = "info"
        [drain]
        timeout = "\(drainTimeout)"
        \(extra)
        """
    }

    @Test func sigtermLosesNoRequestInFlightAndExitsZeroQuickly() async throws {
        let backend = try await BackendFixture.start()
        let breakwater = try await BreakwaterProcess(configuration: Self.configuration(upstream: backend.port, drainTimeout: "20s"))
        let port = try #require(breakwater.port)
        let inFlight = try await withThrowingTaskGroup(of: Int.self) { group in
            for index in 0..<10 {
                group.addTask {
                    let client = try await RawClient.connect(port: port)
                    try await client.send(get("/delay/\(300 + index * 20)"))
                    let status = try await client.readResponse().status
                    await client.close()
                    return status
                }
            }
            try await eventually { backend.requestCount(pathPrefix: "/delay/") == 10 }
            let started = ContinuousClock.now
            breakwater.signal(SIGTERM)
            let statuses = try await group.reduce(into: [Int]()) { $0.append($1) }
            let status = await breakwater.waitForExit(timeout: .seconds(10))
            #expect(status == 0, "\(breakwater.log)")
            #expect(ContinuousClock.now - started < .seconds(8))
            return statuses
        }
        #expect(inFlight == Array(repeating: 200, count: 10))
        try await backend.shutdown()
    }

    /// The readiness prober stops with the drain; that is a clean exit too.
    @Test func sigtermWithReadinessProbingExitsZero() async throws {
        let backend = try await BackendFixture.start()
        let readiness = "[readiness]\npath = \"/status/200\"\ninterval = \"100ms\"\n"
        let breakwater = try await BreakwaterProcess(configuration: Self.configuration(upstream: backend.port, extra: readiness))
        let port = try #require(breakwater.port)
        try await eventually { backend.requestCount(pathPrefix: "/status/200") >= 2 }
        let client = try await RawClient.connect(port: port)
        try await client.send(get("/echo"))
        #expect(try await client.readResponse().status == 200)
        await client.close()
        breakwater.signal(SIGTERM)
        let status = await breakwater.waitForExit(timeout: .seconds(5))
        #expect(status == 0, "\(breakwater.log)")
        try await backend.shutdown()
    }

    /// `[drain]` reloads: the drain that follows uses the reloaded timeout.
    @Test func aReloadedDrainTimeoutIsTheOneTheDrainUses() async throws {
        let backend = try await BackendFixture.start()
        let configuration = { (timeout: String) in
            Self.configuration(upstream: backend.port).replacingOccurrences(of: "timeout = \"2s\"", with: "timeout = \"\(timeout)\"")
        }
        let breakwater = try await BreakwaterProcess(configuration: configuration("30s"))
        try breakwater.rewriteConfiguration(configuration("1s"))
        breakwater.signal(SIGHUP)
        try await eventually { breakwater.log.contains("configuration reloaded") }
        #expect(!breakwater.log.contains("take a restart"), "\(breakwater.log)")
        let client = try await RawClient.connect(port: try #require(breakwater.port))
        try await client.send(get("/hang"))
        try await eventually { backend.requestCount(pathPrefix: "/hang") == 1 }
        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(8)) == 0, "the drain waited for the old timeout")
        await client.close()
        try await backend.shutdown()
    }

    @Test func aHungRequestCannotHoldTheExitPastTheDrainTimeout() async throws {
        let backend = try await BackendFixture.start()
        let breakwater = try await BreakwaterProcess(configuration: Self.configuration(upstream: backend.port))
        let client = try await RawClient.connect(port: try #require(breakwater.port))
        try await client.send(get("/hang"))
        try await eventually { backend.requestCount(pathPrefix: "/hang") == 1 }
        let started = ContinuousClock.now
        breakwater.signal(SIGINT)
        let status = await breakwater.waitForExit(timeout: .seconds(8))
        let took = ContinuousClock.now - started
        #expect(status == 0)
        #expect(took >= .milliseconds(1800) && took < .seconds(5), "exited after \(took)")
        #expect(breakwater.log.contains("requests_cut=1"), "\(breakwater.log)")
        await client.close()
        try await backend.shutdown()
    }

    @Test func aSecondSignalExitsAtOnce() async throws {
        let backend = try await BackendFixture.start()
        let breakwater = try await BreakwaterProcess(configuration: Self.configuration(upstream: backend.port, drainTimeout: "20s"))
        let client = try await RawClient.connect(port: try #require(breakwater.port))
        try await client.send(get("/hang"))
        try await eventually { backend.requestCount(pathPrefix: "/hang") == 1 }
        breakwater.signal(SIGTERM)
        // The second signal must come after the first was handled, or the two may merge into one.
        try await eventually { breakwater.log.contains("[Breakwater] draining") }
        let started = ContinuousClock.now
        breakwater.signal(SIGTERM)
        let status = await breakwater.waitForExit(timeout: .seconds(5))
        #expect(status != nil && status != 0)
        #expect(ContinuousClock.now - started < .seconds(4))
        await client.close()
        try await backend.shutdown()
    }

    @Test func sighupAppliesAChangeAndSurvivesABrokenFile() async throws {
        let backend = try await BackendFixture.start()
        let route = { (timeout: String) in "[[route]]\nname = \"slow\"\npath_prefix = \"/delay/\"\ntimeout = \"\(timeout)\"\n" }
        let breakwater = try await BreakwaterProcess(configuration: Self.configuration(upstream: backend.port, extra: route("30s")))
        let port = try #require(breakwater.port)
        let request = { () async throws -> Int in
            let client = try await RawClient.connect(port: port)
            try await client.send(get("/delay/600"))
            let status = try await client.readResponse().status
            await client.close()
            return status
        }
        #expect(try await request() == 200)

        try breakwater.rewriteConfiguration(Self.configuration(upstream: backend.port, extra: route("200ms")))
        breakwater.signal(SIGHUP)
        try await eventually { breakwater.log.contains("configuration reloaded") }
        #expect(try await request() == 504)

        try breakwater.rewriteConfiguration("this is = not [valid toml")
        breakwater.signal(SIGHUP)
        try await eventually { breakwater.log.contains("configuration reload failed") }
        #expect(try await request() == 504)
        // The file was checked in a child process first, whose own report is discarded: the
        // problem is told once, by the proxy's log line.
        let reports = breakwater.log.components(separatedBy: "\(breakwater.configurationPath):1").count - 1
        #expect(reports == 1, "\(breakwater.log)")

        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(5)) == 0)
        try await backend.shutdown()
    }

    /// A reload's file is parsed in a child process first: a file that crashes the parser (as
    /// toml++ aborts on some inputs) crashes only the child, and the proxy refuses the reload
    /// and keeps serving. The crash is staged with a preloaded library that aborts any
    /// `breakwater check`, since no input is known to crash the parser any more.
    @Test func sighupRefusesAFileThatCrashesTheParserAndKeepsServing() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("breakwater-crash-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = directory.appendingPathComponent("abort-check.c")
        let library = directory.appendingPathComponent("abort-check.so")
        try """
            #include <stdlib.h>
            #include <string.h>
            __attribute__((constructor)) static void abortACheck(int argc, char **argv) {
                if (argc > 1 && strcmp(argv[1], "check") == 0) abort();
            }
            """.write(to: source, atomically: true, encoding: .utf8)
        let compiler = Process()
        compiler.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        compiler.arguments = ["clang", "-shared", "-fPIC", "-o", library.path, source.path]
        try compiler.run()
        compiler.waitUntilExit()
        try #require(compiler.terminationStatus == 0, "clang could not build the staging library")

        let backend = try await BackendFixture.start()
        let breakwater = try await BreakwaterProcess(
            configuration: Self.configuration(upstream: backend.port),
            environment: ["LD_PRELOAD": library.path]
        )
        let port = try #require(breakwater.port)
        try breakwater.rewriteConfiguration(Self.configuration(upstream: backend.port, extra: "[server]\nthreads = 1\n"))
        breakwater.signal(SIGHUP)
        try await eventually { breakwater.log.contains("configuration reload failed") }
        #expect(breakwater.log.contains("the file crashes the TOML parser"), "\(breakwater.log)")
        #expect(!breakwater.log.contains("configuration reloaded"))
        let client = try await RawClient.connect(port: port)
        try await client.send(get("/status/200"))
        #expect(try await client.readResponse().status == 200)
        await client.close()

        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(5)) == 0)
        try await backend.shutdown()
    }
}
