#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Parses a configuration file in a child process (`breakwater check`) before the running
/// proxy parses it for a reload.
///
/// toml++, under TOMLKit, aborts the process on some malformed inputs instead of reporting an
/// error — in release builds too. `TOMLPrecheck` refuses every such input the fuzzer has found,
/// but a reload must not bet the running proxy, with its requests in flight, on there being no
/// other: a file that crashes the check crashes only the check, and the reload is refused.
public enum ConfigCheckProcess {
    public enum Verdict: Equatable, Sendable {
        /// The check ran to its end (the file may still be invalid: parsing it here is safe and
        /// gives the messages).
        case completed
        /// The check was killed by a signal: the file crashes the parser.
        case crashed(signal: Int32)
        /// The check could not be started (no /proc, a failed spawn): the file is parsed here.
        case unavailable
    }

    /// Runs `breakwater check --config path` with the running binary, its output discarded.
    public static func run(path: String) async -> Verdict {
        guard let executable = Self.runningExecutable() else { return .unavailable }
        do {
            let child = try await ChildProcess.spawn(command: [executable, "check", "--config", path], discardingOutput: true)
            return Self.verdict(exitStatus: await child.waitForExit())
        } catch {
            return .unavailable
        }
    }

    /// From `ChildProcess.waitForExit`'s status: an exit code, or 128 + a signal.
    static func verdict(exitStatus: Int32) -> Verdict {
        exitStatus > 128 ? .crashed(signal: exitStatus - 128) : .completed
    }

    private static func runningExecutable() -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
