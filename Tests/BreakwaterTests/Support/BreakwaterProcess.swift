import Foundation
import Testing

/// The `breakwater` executable run as a user runs it, for what only a process shows: signals,
/// exit codes, reloads.
final class BreakwaterProcess: @unchecked Sendable {
    let process = Process()
    let configurationPath: String
    private let logPath: String

    /// The binary that `swift build` put beside the tests, or the one `BREAKWATER_BINARY` names:
    /// how a release build (the one the Dockerfile ships, link-time optimised) is put through
    /// the tests that run a process.
    static var executable: URL {
        get throws {
            if let named = ProcessInfo.processInfo.environment["BREAKWATER_BINARY"] {
                guard FileManager.default.isExecutableFile(atPath: named) else {
                    throw RawClientError(description: "BREAKWATER_BINARY=\(named) is not an executable file")
                }
                return URL(fileURLWithPath: named)
            }
            var directory = URL(fileURLWithPath: #filePath)
            while directory.path != "/" && !FileManager.default.fileExists(atPath: directory.appendingPathComponent("Package.swift").path) {
                directory.deleteLastPathComponent()
            }
            let candidates = ["debug", "release"].map { directory.appendingPathComponent(".build/\($0)/breakwater") }
            guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) else {
                throw RawClientError(description: "no breakwater binary under .build: build the package first")
            }
            return found
        }
    }

    /// Starts `breakwater --config FILE` with `configuration` in FILE, and waits until it listens.
    ///
    /// - Parameters:
    ///   - standardOutputReaderGone: stdout (the access log) is a pipe whose reader has gone,
    ///     as when a log shipper restarts.
    ///   - appCommand: the app's command, given after `--` (supervisor mode).
    ///   - asInit: as PID 1 of a PID namespace of its own, with its own /proc (util-linux's
    ///     unshare), as in a container started without an init; the process this object runs
    ///     is unshare's.
    init(
        configuration: String,
        environment: [String: String] = [:],
        directory workingDirectory: String? = nil,
        waitForListening: Bool = true,
        descriptorLimit: Int? = nil,
        standardOutputReaderGone: Bool = false,
        appCommand: [String] = [],
        asInit: Bool = false
    ) async throws {
        let directory = FileManager.default.temporaryDirectory
        let name = "breakwater-\(UUID().uuidString.prefix(8))"
        self.configurationPath = directory.appendingPathComponent("\(name).conf").path
        self.logPath = directory.appendingPathComponent("\(name).log").path
        try configuration.write(toFile: self.configurationPath, atomically: true, encoding: .utf8)
        _ = FileManager.default.createFile(atPath: self.logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: self.logPath))
        if let descriptorLimit {
            // util-linux's prlimit sets the limit (soft and hard) and execs: the pid stays ours.
            self.process.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
            self.process.arguments = ["--nofile=\(descriptorLimit):\(descriptorLimit)", "--", try Self.executable.path, "--config", self.configurationPath]
        } else if asInit {
            self.process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
            self.process.arguments = ["--pid", "--mount-proc", "--kill-child", "--", try Self.executable.path, "--config", self.configurationPath] + (appCommand.isEmpty ? [] : ["--"] + appCommand)
        } else {
            self.process.executableURL = try Self.executable
            self.process.arguments = ["--config", self.configurationPath] + (appCommand.isEmpty ? [] : ["--"] + appCommand)
        }
        if let workingDirectory {
            self.process.currentDirectoryURL = URL(fileURLWithPath: workingDirectory)
        }
        self.process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        self.process.standardError = log
        if standardOutputReaderGone {
            // A pipe nobody reads: every write to stdout fails with EPIPE.
            let pipe = Pipe()
            self.process.standardOutput = pipe
            try self.process.run()
            try pipe.fileHandleForReading.close()
        } else {
            self.process.standardOutput = log
            try self.process.run()
        }
        if waitForListening {
            try await eventually(timeout: .seconds(10)) { self.port != nil && self.adminPort != nil }
        }
    }

    var log: String {
        (try? String(contentsOfFile: self.logPath, encoding: .utf8)) ?? ""
    }

    /// The proxy's port, from its "listening" log line.
    var port: Int? { self.loggedPort(lineEndingWith: "] listening") }

    /// The admin listener's port, from its log line.
    var adminPort: Int? { self.loggedPort(lineEndingWith: "] admin listening") }

    /// The port of `listen=HOST:PORT` on the first log line with that ending.
    private func loggedPort(lineEndingWith ending: String) -> Int? {
        guard let line = self.log.split(separator: "\n").first(where: { $0.hasSuffix(ending) }),
            let range = line.range(of: "listen=")
        else { return nil }
        let address = line[range.upperBound...].prefix { $0 != " " }
        return address.lastIndex(of: ":").flatMap { Int(address[address.index(after: $0)...]) }
    }

    /// Waits until the proxy counts `count` requests in flight on `route`, as its admin
    /// `/metrics` says: a test that signals "while requests are in flight" must know they are,
    /// since a fixed pause loses that race on a loaded machine.
    func waitUntilInFlight(_ count: Int, route: String = "default", timeout: Duration = .seconds(10)) async throws {
        let admin = try #require(self.adminPort)
        let sample = #"breakwater_in_flight_requests{route="\#(route)"} \#(count).0"#
        try await eventually(timeout: timeout) {
            (try? await RawClient.request(port: admin, get("/metrics")))?.bodyString.contains(sample) == true
        }
    }

    func signal(_ signal: Int32) {
        kill(self.process.processIdentifier, signal)
    }

    /// The exit status once the process ended, or nil if it still runs after `timeout`.
    func waitForExit(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while self.process.isRunning {
            if ContinuousClock.now >= deadline { return nil }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return self.process.terminationStatus
    }

    func rewriteConfiguration(_ text: String) throws {
        try text.write(toFile: self.configurationPath, atomically: true, encoding: .utf8)
    }

    deinit {
        if self.process.isRunning {
            kill(self.process.processIdentifier, SIGKILL)
        }
        try? FileManager.default.removeItem(atPath: self.configurationPath)
        try? FileManager.default.removeItem(atPath: self.logPath)
    }
}
