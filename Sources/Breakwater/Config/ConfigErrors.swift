/// One thing wrong with a configuration file, located as precisely as the file allows.
public struct ConfigProblem: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    /// Nil when no line can be told (a missing key, say).
    public var line: Int?
    /// Dotted, routes 1-based: `route[2].breaker.failure_rate`; empty for the file as a whole.
    public var keyPath: String
    public var message: String

    /// `proxy.conf:12: route[2].breaker.failure_rate: must be between 0 and 1, got 1.5`
    public var description: String {
        let location = self.line.map { "\(self.file):\($0)" } ?? self.file
        return self.keyPath.isEmpty ? "\(location): \(self.message)" : "\(location): \(self.keyPath): \(self.message)"
    }
}

/// Every problem found in a file: users fix them all in one round, not one per restart.
public struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    public var problems: [ConfigProblem]

    public var description: String {
        self.problems.map(\.description).joined(separator: "\n")
    }
}
