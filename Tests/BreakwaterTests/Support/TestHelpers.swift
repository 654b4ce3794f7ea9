import Foundation

/// This process's resident memory, from /proc (Linux).
func residentMemoryBytes() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let kilobytes = line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        return kilobytes * 1024
    }
    return 0
}

struct ConditionTimedOut: Error, CustomStringConvertible {
    var description: String
}

/// Polls `condition` until it holds, failing after `timeout`.
func eventually(
    timeout: Duration = .seconds(5),
    _ condition: () async throws -> Bool,
    sourceLocation: String = #function
) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        if ContinuousClock.now >= deadline {
            throw ConditionTimedOut(description: "condition not met within \(timeout) in \(sourceLocation)")
        }
        try await Task.sleep(for: .milliseconds(20))
    }
}
