@testable import Breakwater
import Foundation
import NIOCore
import NIOPosix
import Testing

/// Supervisor mode with a real child process: Python's standard-library test app.
@Suite(.serialized) struct SupervisorTests {
    private static var appScript: String {
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { root.deleteLastPathComponent() }
        return root.appendingPathComponent("Fixtures/app.py").path
    }

    /// The app, closing every connection after its answer: each request connects anew, so a
    /// worker that stops listening is found at once.
    private static var appClosingEachConnection: String {
        #"["python3", "\#(Self.appScript)", "{port}", "close"]"#
    }

    /// A port that was free a moment ago.
    private static func freePort() async throws -> Int {
        try await Self.freePorts(1)
    }

    /// A base port with `count` free ports from it, below Linux's ephemeral range (32768 and
    /// up), where the kernel could hand one to an outgoing connection before the app binds it.
    private static func freePorts(_ count: Int) async throws -> Int {
        for _ in 0..<50 {
            let base = Int.random(in: 20_000..<32_000)
            var channels: [any Channel] = []
            for offset in 0..<count {
                guard let channel = try? await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .bind(host: "127.0.0.1", port: base + offset).get() else { break }
                channels.append(channel)
            }
            for channel in channels { try await channel.close() }
            if channels.count == count { return base }
        }
        throw RawClientError(description: "no \(count) free ports in a row")
    }

    /// Steady load of idempotent requests from 4 clients for `duration`; `during` runs meanwhile.
    private static func underLoad(
        _ port: Int,
        for duration: Duration,
        during: @escaping @Sendable () async throws -> Void
    ) async throws -> [Int] {
        try await withThrowingTaskGroup(of: [Int].self) { group in
            for _ in 0..<4 {
                group.addTask {
                    var statuses: [Int] = []
                    let end = ContinuousClock.now + duration
                    while ContinuousClock.now < end {
                        statuses.append(try await Self.get(port, "/delay/20").status)
                    }
                    return statuses
                }
            }
            try await during()
            return try await group.reduce(into: []) { $0 += $1 }
        }
    }

    /// The app processes that answered `count` requests.
    private static func pids(_ port: Int, count: Int) async throws -> Set<String> {
        var pids: Set<String> = []
        for _ in 0..<count { pids.insert(try await Self.get(port, "/pid").bodyString) }
        return pids
    }

    private static func configuration(command: String, basePort: Int, restart: String = "always", workers: Int = 1) -> String {
        """
        listen = "127.0.0.1:0"
        [admin]
        listen = "127.0.0.1:0"
        [log]
        access = false
        [app]
        command = \(command)
        base_port = \(basePort)
        workers = \(workers)
        restart = "\(restart)"
        restart_backoff = "200ms"
        stop_timeout = "3s"
        """
    }

    private static func get(_ port: Int, _ path: String) async throws -> RawResponse {
        try await RawClient.request(port: port, BreakwaterTests.get(path), timeout: .seconds(20))
    }

    @Test func killingTheAppUnderLoadLosesNoRequest() async throws {
        let appPort = try await Self.freePort()
        let breakwater = try await BreakwaterProcess(
            configuration: Self.configuration(command: #"["python3", "\#(Self.appScript)", "{port}"]"#, basePort: appPort)
        )
        let port = try #require(breakwater.port)
        #expect(try await Self.get(port, "/health").status == 200)
        let firstPID = try await Self.get(port, "/pid").bodyString
        let firstProcess = try #require(pid_t(firstPID))

        let statuses = try await withThrowingTaskGroup(of: [Int].self) { group in
            for _ in 0..<4 {
                group.addTask {
                    var statuses: [Int] = []
                    let end = ContinuousClock.now + .seconds(4)
                    while ContinuousClock.now < end {
                        statuses.append(try await Self.get(port, "/delay/20").status)
                    }
                    return statuses
                }
            }
            try await Task.sleep(for: .seconds(1))
            kill(firstProcess, SIGKILL)
            return try await group.reduce(into: []) { $0 += $1 }
        }
        print("kill -9 of the app under load: \(statuses.count) requests, \(statuses.filter { $0 != 200 }.count) lost")
        #expect(statuses.count > 50)
        #expect(statuses.allSatisfy { $0 == 200 }, "lost: \(statuses.filter { $0 != 200 })")
        let secondPID = try await Self.get(port, "/pid").bodyString
        #expect(secondPID != firstPID)
        #expect(breakwater.log.contains("app exited"))

        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(10)) == 0)
        #expect(!Self.isRunning(try #require(pid_t(secondPID))), "the app outlived Breakwater")
    }

    @Test func aCrashLoopingAppIsRestartedWithGrowingDelays() async throws {
        let breakwater = try await BreakwaterProcess(
            configuration: Self.configuration(command: #"["python3", "-c", "import sys; sys.exit(3)"]"#, basePort: 1),
            waitForListening: false
        )
        try await eventually(timeout: .seconds(10)) {
            breakwater.log.components(separatedBy: "restarting app").count > 4
        }
        let delays = breakwater.log.split(separator: "\n").filter { $0.hasSuffix("restarting app") }.compactMap { line -> Double? in
            guard let range = line.range(of: "in=") else { return nil }
            return Double(line[range.upperBound...].prefix { $0 != " " })
        }
        #expect(delays.count >= 4)
        #expect(Array(delays.prefix(4)) == [0.2, 0.4, 0.8, 1.6], "\(delays)")
        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(10)) == 0)
    }

    /// A stop during a restart's backoff ends the wait: the exit does not sit out the delay.
    @Test func sigtermDuringARestartBackoffExitsWithoutWaitingForIt() async throws {
        let configuration = Self.configuration(command: #"["python3", "-c", "import sys; sys.exit(3)"]"#, basePort: 1)
            .replacingOccurrences(of: #"restart_backoff = "200ms""#, with: #"restart_backoff = "20s""#)
        let breakwater = try await BreakwaterProcess(configuration: configuration, waitForListening: false)
        try await eventually(timeout: .seconds(10)) { breakwater.log.contains("restarting app") }
        let started = ContinuousClock.now
        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(10)) == 0)
        let took = ContinuousClock.now - started
        #expect(took < .seconds(5), "the exit waited \(took) for the backoff")
    }

    @Test func sigtermStopsTheAppOnlyAfterRequestsInFlightFinished() async throws {
        let appPort = try await Self.freePort()
        let breakwater = try await BreakwaterProcess(
            configuration: Self.configuration(command: #"["python3", "\#(Self.appScript)", "{port}"]"#, basePort: appPort)
        )
        let port = try #require(breakwater.port)
        let pid = try #require(pid_t(try await Self.get(port, "/pid").bodyString))
        async let slow = Self.get(port, "/delay/1500")
        try await breakwater.waitUntilInFlight(1)
        breakwater.signal(SIGTERM)
        #expect(try await slow.status == 200)
        #expect(await breakwater.waitForExit(timeout: .seconds(10)) == 0)
        let log = breakwater.log
        let drained = try #require(log.range(of: "drained"))
        let stopping = try #require(log.range(of: "stopping app"))
        #expect(drained.lowerBound < stopping.lowerBound)
        #expect(!Self.isRunning(pid))
    }

    /// The app holds none of Breakwater's sockets (SwiftNIO opens them without close-on-exec):
    /// once a drain stops accepting, the port refuses new connections at once, though the app
    /// runs on until the requests in flight are answered. A copy of the listener in the app
    /// would take connections that nobody answers.
    @Test func aDrainStopsAcceptingWhileTheAppRunsOn() async throws {
        let appPort = try await Self.freePort()
        let breakwater = try await BreakwaterProcess(
            configuration: Self.configuration(command: #"["python3", "\#(Self.appScript)", "{port}"]"#, basePort: appPort)
        )
        let port = try #require(breakwater.port)
        async let slow = Self.get(port, "/delay/8000")
        try await breakwater.waitUntilInFlight(1)
        breakwater.signal(SIGTERM)
        try await eventually(timeout: .seconds(4)) {
            (try? await RawClient.connect(port: port)) == nil
        }
        #expect(try await slow.status == 200)
        #expect(await breakwater.waitForExit(timeout: .seconds(10)) == 0)
    }

    /// A port already taken ends Breakwater with an error that names it, app and all: the
    /// app must not run on behind a proxy that will never listen, and no signal should be
    /// needed to find that out.
    @Test func aPortAlreadyTakenEndsBreakwaterAndItsApp() async throws {
        let taken = try await RawBackend.start { _ in nil }
        let appPort = try await Self.freePort()
        let configuration = Self.configuration(command: #"["python3", "\#(Self.appScript)", "{port}"]"#, basePort: appPort)
            .replacingOccurrences(of: #"listen = "127.0.0.1:0"\#n[admin]"#, with: "listen = \"127.0.0.1:\(taken.port)\"\n[admin]")
        let breakwater = try await BreakwaterProcess(configuration: configuration, waitForListening: false)
        let status = await breakwater.waitForExit(timeout: .seconds(20))
        #expect(status == 1, "Breakwater did not end: \(breakwater.log)")
        #expect(breakwater.log.contains("cannot listen on 127.0.0.1:\(taken.port) (listen): Address already in use"), "\(breakwater.log)")
        if status == nil {
            breakwater.signal(SIGKILL)
        }
        try await taken.shutdown()
    }

    @Test func anAppThatEndsWithRestartNeverEndsBreakwaterWithItsCode() async throws {
        let breakwater = try await BreakwaterProcess(
            configuration: Self.configuration(command: #"["python3", "-c", "import time, sys; time.sleep(0.5); sys.exit(3)"]"#, basePort: 1, restart: "never"),
            waitForListening: false
        )
        #expect(await breakwater.waitForExit(timeout: .seconds(10)) == 3, "\(breakwater.log)")
    }

    @Test func withThreeWorkersKillingOneLosesNoneAndTheOthersCarryIt() async throws {
        let basePort = try await Self.freePorts(3)
        let breakwater = try await BreakwaterProcess(
            configuration: Self.configuration(command: #"["python3", "\#(Self.appScript)", "{port}"]"#, basePort: basePort, workers: 3)
        )
        let port = try #require(breakwater.port)
        try await eventually(timeout: .seconds(10)) { breakwater.log.components(separatedBy: "app ready").count == 4 }
        let before = try await Self.pids(port, count: 30)
        #expect(before.count == 3, "requests were not spread: \(before)")
        let victim = try #require(before.first.flatMap { pid_t($0) })
        let statuses = try await Self.underLoad(port, for: .seconds(3)) {
            try await Task.sleep(for: .seconds(1))
            kill(victim, SIGKILL)
        }
        print("kill -9 of one of 3 workers under load: \(statuses.count) requests, \(statuses.filter { $0 != 200 }.count) lost")
        #expect(statuses.count > 50)
        #expect(statuses.allSatisfy { $0 == 200 }, "lost: \(statuses.filter { $0 != 200 })")
        let after = try await Self.pids(port, count: 30)
        #expect(!after.contains(String(victim)))
        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(10)) == 0)
    }

    /// A worker the data path took out of the balance (a connect to it was refused) is probed
    /// until it answers again, and rejoins: one missed connect must not halve the app for good.
    @Test func aWorkerTakenOutAfterAFailedConnectRejoinsWhenItAnswersAgain() async throws {
        let basePort = try await Self.freePorts(2)
        let breakwater = try await BreakwaterProcess(
            configuration: Self.configuration(command: Self.appClosingEachConnection, basePort: basePort, workers: 2)
        )
        let port = try #require(breakwater.port)
        try await eventually(timeout: .seconds(10)) { breakwater.log.components(separatedBy: "app ready").count == 3 }
        #expect(try await Self.pids(port, count: 20).count == 2)
        // One worker stops listening for 1.5 s: the next connects to it are refused.
        #expect(try await Self.get(port, "/pause-listener/1500").bodyString == "pausing")
        try await eventually(timeout: .seconds(5)) {
            _ = try? await Self.get(port, "/pid")
            return breakwater.log.contains("ejected")
        }
        // Listening again, it is back in the balance.
        try await eventually(timeout: .seconds(10)) { try await Self.pids(port, count: 10).count == 2 }
        #expect(breakwater.log.contains("app back in the balance"), "\(breakwater.log)")
        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(10)) == 0)
    }

    /// The only worker taken out after a failed connect leaves no app to send requests to:
    /// they are held until it is back, as during a restart, not retried into refused connects
    /// and answered 502.
    @Test func withTheOnlyWorkerTakenOutRequestsWaitForIt() async throws {
        let appPort = try await Self.freePort()
        let breakwater = try await BreakwaterProcess(
            configuration: Self.configuration(command: Self.appClosingEachConnection, basePort: appPort)
        )
        let port = try #require(breakwater.port)
        try await eventually(timeout: .seconds(10)) { breakwater.log.contains("app ready") }
        #expect(try await Self.get(port, "/pause-listener/1000").bodyString == "pausing")
        var statuses: [Int] = []
        let end = ContinuousClock.now + .seconds(2)
        while ContinuousClock.now < end {
            statuses.append(try await Self.get(port, "/pid").status)
        }
        #expect(breakwater.log.contains("ejected"), "\(breakwater.log)")
        #expect(statuses.allSatisfy { $0 == 200 }, "\(statuses)")
        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(10)) == 0)
    }

    /// With `[readiness]`, a worker taken out by a failed connect is probed again within
    /// 100 ms, as any worker out of the balance, not at its next `interval`.
    @Test func aWorkerTakenOutIsProbedAtOnceNotAtItsNextInterval() async throws {
        let basePort = try await Self.freePorts(2)
        let breakwater = try await BreakwaterProcess(
            configuration: Self.configuration(command: Self.appClosingEachConnection, basePort: basePort, workers: 2)
                + "\n[readiness]\npath = \"/health\"\ninterval = \"30s\"\n"
        )
        let port = try #require(breakwater.port)
        try await eventually(timeout: .seconds(10)) { breakwater.log.components(separatedBy: "app ready").count == 3 }
        #expect(try await Self.get(port, "/pause-listener/300").bodyString == "pausing")
        try await eventually(timeout: .seconds(5)) {
            _ = try? await Self.get(port, "/pid")
            return breakwater.log.contains("ejected")
        }
        try await eventually(timeout: .seconds(5)) { breakwater.log.contains("app back in the balance") }
        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(10)) == 0)
    }

    /// With `[readiness]`, a worker in the balance is still probed every `interval`: one whose
    /// process lives but whose health check fails leaves the balance, and the others take its
    /// requests until it is healthy again.
    @Test func aWorkerWhoseHealthCheckFailsLeavesTheBalanceUntilItPasses() async throws {
        let basePort = try await Self.freePorts(2)
        let configuration =
            Self.configuration(command: #"["python3", "\#(Self.appScript)", "{port}"]"#, basePort: basePort, workers: 2)
            + "\n[readiness]\npath = \"/health\"\ninterval = \"200ms\"\nunhealthy_threshold = 2\n"
        let breakwater = try await BreakwaterProcess(configuration: configuration)
        let port = try #require(breakwater.port)
        try await eventually(timeout: .seconds(10)) { breakwater.log.components(separatedBy: "app ready").count == 3 }
        #expect(try await Self.pids(port, count: 20).count == 2)
        // One worker's /health fails for 4 s; its process, and its port, stay up.
        let sick = try await Self.get(port, "/sick/4000").bodyString
        try await eventually(timeout: .seconds(3)) { breakwater.log.contains("app not ready") }
        let whileSick = try await Self.pids(port, count: 20)
        #expect(whileSick.count == 1 && !whileSick.contains(sick), "\(whileSick) with \(sick) sick")
        // Healthy again, it is back.
        try await eventually(timeout: .seconds(10)) { try await Self.pids(port, count: 10).count == 2 }
        #expect(breakwater.log.contains("app back in the balance"), "\(breakwater.log)")
        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(10)) == 0)
    }

    /// The command after `--` is part of the configuration on every reload too: a SIGHUP keeps
    /// the app supervised and requests held while it restarts, and reports nothing changed.
    @Test func aReloadKeepsTheCommandGivenAfterTheSeparator() async throws {
        let appPort = try await Self.freePort()
        let file = "listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\naccess = false\n[app]\nbase_port = \(appPort)\nrestart_backoff = \"200ms\"\n"
        let breakwater = try await BreakwaterProcess(configuration: file, appCommand: ["python3", Self.appScript, "{port}"])
        let port = try #require(breakwater.port)
        try await eventually(timeout: .seconds(10)) { breakwater.log.contains("app ready") }
        breakwater.signal(SIGHUP)
        try await eventually { breakwater.log.contains("configuration reloaded") }
        #expect(!breakwater.log.contains("take a restart"), "\(breakwater.log)")
        // The app dies: the next request waits for the restarted app instead of failing.
        let pid = try await Self.get(port, "/pid").bodyString
        kill(try #require(pid_t(pid)), SIGKILL)
        let response = try await Self.get(port, "/pid")
        #expect(response.status == 200)
        #expect(response.bodyString != pid)
        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(10)) == 0)
    }

    @Test func aRollingRestartUnderLoadLosesNone() async throws {
        let basePort = try await Self.freePorts(2)
        let breakwater = try await BreakwaterProcess(
            configuration: Self.configuration(command: #"["python3", "\#(Self.appScript)", "{port}"]"#, basePort: basePort, workers: 2)
        )
        let port = try #require(breakwater.port)
        try await eventually(timeout: .seconds(10)) { breakwater.log.components(separatedBy: "app ready").count == 3 }
        let before = try await Self.pids(port, count: 20)
        let statuses = try await Self.underLoad(port, for: .seconds(4)) {
            try await Task.sleep(for: .milliseconds(500))
            breakwater.signal(SIGUSR2)
            try await eventually(timeout: .seconds(10)) { breakwater.log.contains("rolling restart done") }
        }
        print("rolling restart of 2 workers under load: \(statuses.count) requests, \(statuses.filter { $0 != 200 }.count) lost")
        #expect(statuses.count > 50)
        #expect(statuses.allSatisfy { $0 == 200 }, "lost: \(statuses.filter { $0 != 200 })")
        let after = try await Self.pids(port, count: 20)
        #expect(after.isDisjoint(with: before), "before \(before), after \(after)")
        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(10)) == 0)
    }

    /// A worker that crashes while a rolling restart waits for its requests is a crash (logged
    /// so, restarted after its backoff), not the planned stop: its replacement, fresh anyway,
    /// is not stopped in its place, and the app is served afterwards.
    @Test func aCrashDuringARollingRestartIsNotTakenForThePlannedStop() async throws {
        let appPort = try await Self.freePort()
        let breakwater = try await BreakwaterProcess(
            configuration: Self.configuration(command: #"["python3", "\#(Self.appScript)", "{port}"]"#, basePort: appPort)
        )
        let port = try #require(breakwater.port)
        try await eventually(timeout: .seconds(10)) { breakwater.log.contains("app ready") }
        let pid = try #require(pid_t(try await Self.get(port, "/pid").bodyString))
        // A request in flight holds the rolling restart in its wait.
        let slow = Task { try? await Self.get(port, "/delay/2500") }
        try await breakwater.waitUntilInFlight(1)
        breakwater.signal(SIGUSR2)
        try await eventually { breakwater.log.contains("rolling restart") }
        kill(pid, SIGKILL)
        try await eventually(timeout: .seconds(15)) { breakwater.log.contains("rolling restart done") }
        _ = await slow.value
        let log = breakwater.log
        let crash = try #require(log.range(of: "app exited"), "the crash was taken for the planned stop: \(log)")
        if let planned = log.range(of: "app restarted on request") {
            #expect(crash.lowerBound < planned.lowerBound, "the crash was taken for the planned stop: \(log)")
        }
        #expect(try await Self.get(port, "/pid").status == 200)
        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(10)) == 0)
    }

    /// With two workers, a rolling restart never has both out of the balance: not when the
    /// worker it reaches has crashed (it waits for the replacement before the next one leaves),
    /// nor when the other one has (it waits for that one before taking this one out). The
    /// admin listener's readiness, polled all along, never says that no worker is ready.
    @Test func aRollingRestartNeverTakesOutTheLastWorkerInTheBalance() async throws {
        let basePort = try await Self.freePorts(2)
        let configuration = Self.configuration(command: #"["python3", "\#(Self.appScript)", "{port}"]"#, basePort: basePort, workers: 2)
            .replacingOccurrences(of: #"restart_backoff = "200ms""#, with: #"restart_backoff = "1500ms""#)
        let breakwater = try await BreakwaterProcess(configuration: configuration)
        let (port, admin) = (try #require(breakwater.port), try #require(breakwater.adminPort))
        try await eventually(timeout: .seconds(10)) { breakwater.log.components(separatedBy: "app ready").count == 3 }
        func count(_ line: String) -> Int { breakwater.log.components(separatedBy: line).count - 1 }
        for crashed in [0, 1] {
            let (rolls, exits) = (count("rolling restart done"), count("app exited"))
            let pid = try #require(pid_t(try await Self.get(basePort + crashed, "/pid").bodyString))
            kill(pid, SIGKILL)
            try await eventually { count("app exited") > exits }
            breakwater.signal(SIGUSR2)
            var polls = 0
            var noneReady = 0
            let end = ContinuousClock.now + .seconds(20)
            while count("rolling restart done") == rolls && ContinuousClock.now < end {
                polls += 1
                if try await Self.get(admin, "/health/ready").status != 200 { noneReady += 1 }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(count("rolling restart done") > rolls, "worker \(crashed) crashed: the roll did not end: \(breakwater.log)")
            #expect(noneReady == 0, "worker \(crashed) crashed: no worker in the balance at \(noneReady) of \(polls) polls")
            try await eventually(timeout: .seconds(10)) { try await Self.pids(port, count: 10).count == 2 }
        }
        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(10)) == 0)
    }

    /// An app that takes its port from `PORT` (the Heroku and Cloud Run convention) rather than
    /// from `{port}` in its command finds it there.
    @Test func theAppFindsItsPortInThePORTVariable() async throws {
        let appPort = try await Self.freePort()
        let command = #"["sh", "-c", "exec python3 \#(Self.appScript) \"$PORT\""]"#
        let breakwater = try await BreakwaterProcess(configuration: Self.configuration(command: command, basePort: appPort))
        let port = try #require(breakwater.port)
        try await eventually(timeout: .seconds(10)) { breakwater.log.contains("app ready") }
        #expect(try await Self.get(port, "/pid").status == 200)
        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(10)) == 0)
    }

    /// Whether `pid` runs: a zombie, dead but not yet reaped by whoever inherited it, does not.
    private static func isRunning(_ pid: pid_t) -> Bool {
        Self.state(of: pid).map { $0 != "Z" } ?? false
    }

    private static func isZombie(_ pid: pid_t) -> Bool {
        Self.state(of: pid) == "Z"
    }

    /// The state letter of /proc/PID/stat (`R`, `S`, `Z`...), nil for a process gone.
    private static func state(of pid: pid_t) -> Character? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let afterName = stat.lastIndex(of: ")") else {
            return nil
        }
        return stat[stat.index(after: afterName)...].dropFirst().first
    }

    /// Breakwater with an app whose Python runs as a shell's background job, in the shell's
    /// process group (as a uvicorn master's workers are in its): the Python's pid, once ready.
    private static func startAppBehindAShell() async throws -> (BreakwaterProcess, port: Int, python: pid_t) {
        let appPort = try await Self.freePort()
        let command = #"["sh", "-c", "python3 \#(Self.appScript) \"$1\" & wait", "sh", "{port}"]"#
        let breakwater = try await BreakwaterProcess(configuration: Self.configuration(command: command, basePort: appPort))
        let port = try #require(breakwater.port)
        try await eventually(timeout: .seconds(10)) { breakwater.log.contains("app ready") }
        let python = try #require(pid_t(try await Self.get(port, "/pid").bodyString))
        return (breakwater, port, python)
    }

    /// When the app's main process dies and leaves others of its process group behind (here a
    /// shell's background job; in life a uvicorn master's workers), they are stopped: they
    /// would keep the port, and every restart would fail to bind it.
    @Test func whatADeadAppLeavesBehindIsStoppedSoItsRestartCanListen() async throws {
        let (breakwater, port, python) = try await Self.startAppBehindAShell()
        let stat = try String(contentsOfFile: "/proc/\(python)/stat", encoding: .utf8)
        let shell = try #require(stat[stat.index(after: stat.lastIndex(of: ")")!)...].split(separator: " ").dropFirst().first.flatMap { pid_t($0) })
        kill(shell, SIGKILL)
        try await eventually(timeout: .seconds(10)) { !Self.isRunning(python) }
        try await eventually(timeout: .seconds(15)) {
            guard let answer = try? await Self.get(port, "/pid"), answer.status == 200 else { return false }
            return answer.bodyString != "\(python)"
        }
        #expect(breakwater.log.contains("stopping what is left of the app's process group"))
        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(10)) == 0)
    }

    /// As PID 1 (a container without an init), Breakwater is the parent of every process the
    /// app orphans (here a background job whose shell exited at once); each is reaped when it
    /// ends, rather than left a zombie for as long as the app runs.
    @Test(.enabled(if: Self.mayStartAPIDNamespace, "needs unshare --pid (CAP_SYS_ADMIN)"))
    func asInitItReapsWhatTheAppOrphans() async throws {
        let appPort = try await Self.freePort()
        let command = #"["sh", "-c", "sh -c 'true &'; exec python3 \#(Self.appScript) \"$1\"", "sh", "{port}"]"#
        let breakwater = try await BreakwaterProcess(configuration: Self.configuration(command: command, basePort: appPort), asInit: true)
        try await eventually(timeout: .seconds(10)) { breakwater.log.contains("app ready") }
        let unshare = breakwater.process.processIdentifier
        let initProcess = try #require(Self.children(of: unshare).first, "unshare started nothing")
        try await eventually(timeout: .seconds(5)) {
            Self.children(of: initProcess).allSatisfy { !Self.isZombie($0) }
        }
        #expect(try await Self.get(try #require(breakwater.port), "/health").status == 200)
        breakwater.signal(SIGKILL)  // unshare's --kill-child takes the namespace with it
        _ = await breakwater.waitForExit(timeout: .seconds(10))
    }

    /// Whether this test process may start a PID namespace (root, with CAP_SYS_ADMIN).
    private static var mayStartAPIDNamespace: Bool {
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        probe.arguments = ["--pid", "--mount-proc", "--fork", "true"]
        probe.standardError = FileHandle.nullDevice
        guard (try? probe.run()) != nil else { return false }
        probe.waitUntilExit()
        return probe.terminationStatus == 0
    }

    private static func children(of pid: pid_t) -> [pid_t] {
        ChildProcess.children(of: "\(pid)") ?? []
    }

    /// A SIGHUP once the drain is over, while the app takes its time to stop, has no proxy
    /// left to apply to: it says so rather than pass in silence.
    @Test func aReloadAfterTheDrainSaysItWasNotApplied() async throws {
        let appPort = try await Self.freePort()
        let command = #"["sh", "-c", "trap '' TERM; exec python3 \#(Self.appScript) \"$1\"", "sh", "{port}"]"#
        let breakwater = try await BreakwaterProcess(configuration: Self.configuration(command: command, basePort: appPort))
        try await eventually(timeout: .seconds(10)) { breakwater.log.contains("app ready") }
        breakwater.signal(SIGTERM)
        try await eventually { breakwater.log.contains("stopping app") }
        breakwater.signal(SIGHUP)
        try await eventually { breakwater.log.contains("configuration reload not applied: the proxy is not serving") }
        #expect(await breakwater.waitForExit(timeout: .seconds(15)) == 0)
    }

    /// A second stop signal exits at once, and takes the whole app with it: the parent-death
    /// signal reaches only the process Breakwater started (here a shell), not what that forked
    /// (in life a uvicorn or gunicorn master's workers), which would keep the app's port.
    @Test func aSecondSignalTakesTheAppsWholeProcessGroupWithIt() async throws {
        let (breakwater, port, python) = try await Self.startAppBehindAShell()
        async let slow = try? Self.get(port, "/delay/8000")
        try await breakwater.waitUntilInFlight(1)
        breakwater.signal(SIGTERM)
        try await eventually { breakwater.log.contains("[Breakwater] draining") }
        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(5)) == 1)
        try await eventually(timeout: .seconds(5)) { !Self.isRunning(python) }
        _ = await slow
    }

    /// A second stop signal also reaches a group whose main process already exited and whose
    /// leftovers are being stopped (here a Python that ignores SIGTERM, left by a shell that
    /// exited at once): it would otherwise outlive Breakwater.
    @Test func aSecondSignalReachesTheLeftoversOfAnAppThatExited() async throws {
        let appPort = try await Self.freePort()
        let pidFile = FileManager.default.temporaryDirectory.appendingPathComponent("bw-left-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: pidFile) }
        let script = "trap '' TERM; python3 \(Self.appScript) $1 & echo $! > \(pidFile); exit 0"
        let configuration = Self.configuration(command: #"["sh", "-c", "\#(script)", "sh", "{port}"]"#, basePort: appPort)
            .replacingOccurrences(of: #"stop_timeout = "3s""#, with: #"stop_timeout = "30s""#)
        let breakwater = try await BreakwaterProcess(configuration: configuration)
        try await eventually(timeout: .seconds(10)) { breakwater.log.contains("stopping what is left of the app's process group") }
        let python = try #require(pid_t((try? String(contentsOfFile: pidFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""))
        #expect(Self.isRunning(python))
        breakwater.signal(SIGTERM)
        try await eventually { breakwater.log.contains("[Breakwater] draining") }
        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(5)) == 1)
        try await eventually(timeout: .seconds(5)) { !Self.isRunning(python) }
    }

    /// A rolling restart whose restarted worker never comes back (here: it starts something
    /// that never listens) stops after the worker's stop and `readiness.hold`, rather than
    /// wait forever and turn every later restart away as "already under way".
    @Test func aRollingRestartWhoseWorkerNeverReturnsStopsAndTheNextOneRuns() async throws {
        let appPort = try await Self.freePort()
        let marker = FileManager.default.temporaryDirectory.appendingPathComponent("bw-roll-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: marker) }
        let script = "if [ -e \(marker) ]; then exec sleep 600; fi; touch \(marker); exec python3 \(Self.appScript) $1"
        let configuration = Self.configuration(command: #"["sh", "-c", "\#(script)", "sh", "{port}"]"#, basePort: appPort)
            + "\n[readiness]\npath = \"/health\"\nhold = \"1s\"\n"
        let breakwater = try await BreakwaterProcess(configuration: configuration, environment: ["BREAKWATER_ADMIN_TOKEN": "roll"])
        try await eventually(timeout: .seconds(10)) { breakwater.log.contains("app ready") }
        breakwater.signal(SIGUSR2)
        // While the roll waits, another is refused, and the admin endpoint says so.
        try await eventually(timeout: .seconds(5)) { breakwater.log.contains("rolling restart") }
        let admin = try #require(breakwater.adminPort)
        let busy = try await RawClient.request(port: admin, "POST /admin/restart-app HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer roll\r\nContent-Length: 0\r\n\r\n")
        #expect(busy.status == 409, "\(busy.status) \(busy.bodyString)")
        #expect(busy.bodyString.contains("already under way"))
        try await eventually(timeout: .seconds(15)) { breakwater.log.contains("rolling restart stopped") }
        let seen = breakwater.log.count
        breakwater.signal(SIGUSR2)
        try await eventually(timeout: .seconds(5)) { breakwater.log.dropFirst(seen).contains("rolling restart") }
        #expect(breakwater.log.components(separatedBy: "already under way").count == 2, "only the one refused while the first roll waited")
        breakwater.signal(SIGTERM)
        #expect(await breakwater.waitForExit(timeout: .seconds(10)) == 0)
    }

    @Test func theAppDiesWithBreakwaterEvenWhenItIsKilled() async throws {
        let appPort = try await Self.freePort()
        let breakwater = try await BreakwaterProcess(
            configuration: Self.configuration(command: #"["python3", "\#(Self.appScript)", "{port}"]"#, basePort: appPort)
        )
        let port = try #require(breakwater.port)
        let pid = try #require(pid_t(try await Self.get(port, "/pid").bodyString))
        // Long enough for idle runtime threads to retire: the app must not go with them.
        try await Task.sleep(for: .seconds(3))
        #expect(Self.isRunning(pid), "the app died while Breakwater ran")
        breakwater.signal(SIGKILL)
        _ = await breakwater.waitForExit(timeout: .seconds(5))
        try await eventually(timeout: .seconds(5)) { !Self.isRunning(pid) }
    }
}
