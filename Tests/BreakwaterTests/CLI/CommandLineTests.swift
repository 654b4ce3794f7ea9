import Foundation
import Testing

/// The `breakwater` executable as a user runs it.
@Suite struct CommandLineTests {
    private static func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = try BreakwaterProcess.executable
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    private static func write(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("breakwater-\(UUID().uuidString).conf").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func checkAcceptsTheExampleFile() throws {
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { root.deleteLastPathComponent() }
        let result = try Self.run(["check", "--config", root.appendingPathComponent("proxy.conf.example").path])
        #expect(result.status == 0, "\(result.output)")
    }

    @Test func checkPointsAtABadKey() throws {
        let path = try Self.write("upstream = \"127.0.0.1:8000\"\n\n[server]\nthreads = 1\nheader_read_timeuot = \"5s\"\n")
        let result = try Self.run(["check", "--config", path])
        #expect(result.status == 1)
        #expect(result.output.contains("\((path as NSString).lastPathComponent):5"), "\(result.output)")
        #expect(result.output.contains("server.header_read_timeuot"), "\(result.output)")
    }

    @Test func runRefusesAnInvalidFileWithTheSameMessage() throws {
        let path = try Self.write("upstream = \"127.0.0.1:8000\"\n[concurrency]\nsoft_limit = 10\nhard_limit = 5\n")
        let check = try Self.run(["check", "--config", path])
        let run = try Self.run(["--config", path])
        #expect(check.status == 1)
        #expect(run.status == 1)
        #expect(run.output == check.output)
        #expect(run.output.contains("hard_limit"))
    }

    /// A mistyped option is a usage error (64, `EX_USAGE`), told apart from a file with
    /// problems (1).
    @Test func aMistypedOptionIsAUsageError() throws {
        let result = try Self.run(["check", "--conifg", "proxy.conf"])
        #expect(result.status == 64)
        #expect(result.output.contains("--conifg"), "\(result.output)")
    }

    @Test func aMissingFileIsAClearError() throws {
        let result = try Self.run(["check", "--config", "/nonexistent/proxy.conf"])
        #expect(result.status == 1)
        #expect(result.output.contains("/nonexistent/proxy.conf"))
    }
}
