import TOMLKit

/// Collects problems with their locations while a file is read.
final class ProblemLog {
    let fileName: String
    let lineIndex: TOMLLineIndex
    private(set) var problems: [ConfigProblem] = []

    init(fileName: String, text: String) {
        self.fileName = fileName
        self.lineIndex = TOMLLineIndex(text)
    }

    /// - Parameter exactLine: locate at the key itself only (a missing key has no line).
    func report(_ keyPath: String, _ message: String, exactLine: Bool = false) {
        let line = exactLine ? self.lineIndex.exactLine(of: keyPath) : self.lineIndex.line(of: keyPath)
        self.problems.append(ConfigProblem(file: self.fileName, line: line, keyPath: keyPath, message: message))
    }

    func report(syntaxError error: TOMLParseError) {
        self.problems.append(
            ConfigProblem(file: self.fileName, line: error.source.begin.line, keyPath: "", message: "syntax error: \(error.description)")
        )
    }
}

/// Reads the keys of one TOML table as typed values, logging a located problem for each value
/// that is missing its mark, and — in `finish()` — for each key nobody asked about.
///
/// Every accessor returns nil both when the key is absent and when it is wrong, so the loader
/// keeps the default and carries on: one run reports every problem in the file.
final class TableReader {
    let path: String
    private let table: TOMLTable
    private let log: ProblemLog
    private var known: Set<String> = []

    init(_ table: TOMLTable, path: String, log: ProblemLog) {
        self.table = table
        self.path = path
        self.log = log
    }

    func keyPath(_ key: String) -> String {
        self.path.isEmpty ? key : "\(self.path).\(key)"
    }

    func has(_ key: String) -> Bool {
        self.table.contains(key: key)
    }

    /// Keeps two keys in order, `low` ≤ `high` (`soft_limit` and `hard_limit`). Set together,
    /// they must agree, or `problem` is reported on `reportedKey`. Set alone, a key moves the
    /// other's inherited value (its default, or `[defaults]`') out of its way: a file that says
    /// `hard_limit = 100` means a soft limit of 100 too, not an error about a default of 200 it
    /// never wrote.
    func keepInOrder<Value: Comparable>(
        _ lowKey: String,
        _ low: inout Value,
        _ highKey: String,
        _ high: inout Value,
        reportedKey: String,
        problem: (_ low: Value, _ high: Value) -> String
    ) {
        guard high < low else { return }
        switch (self.has(lowKey), self.has(highKey)) {
        case (true, false): high = low
        case (false, true): low = high
        default: self.report(reportedKey, problem(low, high))
        }
    }

    func report(_ key: String, _ message: String) {
        self.log.report(self.keyPath(key), message)
    }

    /// Reports the keys that no accessor asked for.
    func finish() {
        for key in self.table.keys.sorted() where !self.known.contains(key) {
            self.log.report(self.keyPath(key), "unknown key")
        }
    }

    private func value(_ key: String) -> (any TOMLValueConvertible)? {
        self.known.insert(key)
        return self.table[key]
    }

    private func typeMismatch(_ key: String, expected: String, got value: any TOMLValueConvertible) {
        self.report(key, "expected \(expected), got \(Self.describe(value))")
    }

    func string(_ key: String) -> String? {
        guard let value = self.value(key) else { return nil }
        guard let string = value.string else {
            self.typeMismatch(key, expected: "a string", got: value)
            return nil
        }
        return string
    }

    func bool(_ key: String) -> Bool? {
        guard let value = self.value(key) else { return nil }
        guard let bool = value.bool else {
            self.typeMismatch(key, expected: "true or false", got: value)
            return nil
        }
        return bool
    }

    func int(_ key: String, in range: ClosedRange<Int>) -> Int? {
        guard let value = self.value(key) else { return nil }
        guard value.type == .int, let int = value.int else {
            self.typeMismatch(key, expected: "an integer", got: value)
            return nil
        }
        return self.checked(key, int, in: range)
    }

    func double(_ key: String, in range: ClosedRange<Double>) -> Double? {
        guard let value = self.value(key) else { return nil }
        let number: Double? = value.type == .int ? value.int.map(Double.init) : value.double
        guard let number else {
            self.typeMismatch(key, expected: "a number", got: value)
            return nil
        }
        guard range.contains(number) else {
            self.report(key, "must be between \(Self.format(range.lowerBound)) and \(Self.format(range.upperBound)), got \(Self.format(number))")
            return nil
        }
        return number
    }

    /// A duration string; zero only when `allowZero`.
    func duration(_ key: String, allowZero: Bool = false) -> Duration? {
        guard let value = self.value(key) else { return nil }
        guard let text = value.string else {
            self.typeMismatch(key, expected: "a duration string like \"2s\"", got: value)
            return nil
        }
        guard let duration = ConfigUnits.duration(text) else {
            self.report(key, "invalid duration \"\(text)\": use a number with a unit, like \"250ms\", \"2s\" or \"1m\"")
            return nil
        }
        guard allowZero || duration > .zero else {
            self.report(key, "must be longer than zero")
            return nil
        }
        return duration
    }

    /// Bytes, as an integer or a string with a unit; more than zero.
    func size(_ key: String) -> Int? {
        guard let value = self.value(key) else { return nil }
        let size: Int?
        if value.type == .int {
            size = value.int
        } else if let text = value.string {
            size = ConfigUnits.size(text)
            if size == nil {
                self.report(key, "invalid size \"\(text)\": use bytes or a number with a unit, like \"64KB\" or \"10MB\"")
                return nil
            }
        } else {
            self.typeMismatch(key, expected: "a size like \"64KB\" or a number of bytes", got: value)
            return nil
        }
        return size.flatMap { self.checked(key, $0, in: 1...Int.max) }
    }

    func strings(_ key: String) -> [String]? {
        guard let value = self.value(key) else { return nil }
        guard let array = value.array, array.allSatisfy({ $0.type == .string }) else {
            self.typeMismatch(key, expected: "an array of strings", got: value)
            return nil
        }
        return array.compactMap(\.string)
    }

    func ints(_ key: String, in range: ClosedRange<Int>) -> [Int]? {
        guard let value = self.value(key) else { return nil }
        guard let array = value.array, array.allSatisfy({ $0.type == .int }) else {
            self.typeMismatch(key, expected: "an array of integers", got: value)
            return nil
        }
        let numbers = array.compactMap(\.int)
        if let bad = numbers.first(where: { !range.contains($0) }) {
            self.report(key, "must be between \(range.lowerBound) and \(range.upperBound), got \(bad)")
            return nil
        }
        return numbers
    }

    func table(_ key: String) -> TableReader? {
        guard let value = self.value(key) else { return nil }
        guard let table = value.table else {
            self.typeMismatch(key, expected: "a table", got: value)
            return nil
        }
        return TableReader(table, path: self.keyPath(key), log: self.log)
    }

    /// `[[key]]`: the tables of an array of tables, with 1-based paths `key[N]`.
    func tables(_ key: String) -> [TableReader]? {
        guard let value = self.value(key) else { return nil }
        guard let array = value.array, array.allSatisfy({ $0.type == .table }) else {
            self.typeMismatch(key, expected: "an array of tables ([[\(key)]])", got: value)
            return nil
        }
        return array.enumerated().map { index, element in
            TableReader(element.table!, path: "\(self.keyPath(key))[\(index + 1)]", log: self.log)
        }
    }

    private func checked(_ key: String, _ value: Int, in range: ClosedRange<Int>) -> Int? {
        guard range.contains(value) else {
            if range.upperBound == .max {
                self.report(key, "must be at least \(range.lowerBound), got \(value)")
            } else {
                self.report(key, "must be between \(range.lowerBound) and \(range.upperBound), got \(value)")
            }
            return nil
        }
        return value
    }

    private static func describe(_ value: any TOMLValueConvertible) -> String {
        switch value.type {
        case .string: "string \"\(value.string ?? "")\""
        case .int: "integer \(value.int ?? 0)"
        case .double: "number \(format(value.double ?? 0))"
        case .bool: "\(value.bool ?? false)"
        case .array: "an array"
        case .table: "a table"
        default: "a \(value.type)"
        }
    }

    private static func format(_ number: Double) -> String {
        number == number.rounded() && abs(number) < 1e15 ? String(Int(number)) : String(number)
    }
}
