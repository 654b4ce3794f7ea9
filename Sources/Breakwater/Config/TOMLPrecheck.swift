/// Finds the malformed TOML that the parser inside TOMLKit would abort the process on, before
/// the parser sees it.
///
/// toml++ 3.4.0 (vendored by TOMLKit 0.6.0) asserts instead of reporting a syntax error on a few
/// inputs (a table header that does not start with a key, a date whose `T` has no time, a `}`
/// where an array expects a value), and its assertions stay on in release builds: `breakwater check` would crash instead
/// of answering, and a SIGHUP reload of a mistyped file would take down a proxy with requests in
/// flight. Both shapes below are syntax errors anyway, so refusing them here loses nothing; the
/// fuzzer (`fuzz/`, `FuzzConfig`) found them and keeps looking for others.
///
/// A small lexer, not a parser: it follows strings and comments so that the same characters
/// inside a string (a fallback body, say) are left alone.
enum TOMLPrecheck {
    struct Finding: Equatable {
        var line: Int
        var message: String
    }

    static func findings(in text: String) -> [Finding] {
        var scanner = Scanner(bytes: Array(text.utf8))
        if scanner.bytes.starts(with: [0xEF, 0xBB, 0xBF]) {
            scanner.index = 3  // a UTF-8 byte order mark, which toml++ skips too
        }
        scanner.run()
        return scanner.findings
    }

    private struct Scanner {
        enum State {
            case code
            case comment
            case basicString, literalString
            case multilineBasicString, multilineLiteralString
        }

        let bytes: [UInt8]
        var findings: [Finding] = []
        var index = 0
        var line = 1
        var state = State.code
        /// Only blanks so far on this line: a `[` here opens a table header.
        var atLineStart = true
        /// After `=` on this line, or inside an array that spans lines: a value is being read.
        var inValue = false
        var arrayDepth = 0
        /// The last byte outside blanks, line breaks, comments and strings.
        var lastSignificant: UInt8 = 0

        mutating func run() {
            while self.index < self.bytes.count {
                let byte = self.bytes[self.index]
                if byte == UInt8(ascii: "\n") {
                    self.line += 1
                    self.atLineStart = true
                    if self.state == .comment || self.state == .basicString || self.state == .literalString {
                        self.state = .code  // a string cannot span lines: the parser says so
                    }
                    if self.state == .code && self.arrayDepth == 0 { self.inValue = false }
                    self.index += 1
                    continue
                }
                switch self.state {
                case .code: self.code(byte)
                case .comment: self.index += 1
                case .basicString:
                    if byte == UInt8(ascii: "\\") {
                        self.index += 2
                        continue
                    }
                    if byte == UInt8(ascii: "\"") { self.state = .code }
                    self.index += 1
                case .literalString:
                    if byte == UInt8(ascii: "'") { self.state = .code }
                    self.index += 1
                case .multilineBasicString:
                    if byte == UInt8(ascii: "\\"), self.index + 1 < self.bytes.count, self.bytes[self.index + 1] != UInt8(ascii: "\n") {
                        self.index += 2
                        continue
                    }
                    if self.startsWith("\"\"\"") {
                        self.state = .code
                        self.index += 3
                    } else {
                        self.index += 1
                    }
                case .multilineLiteralString:
                    if self.startsWith("'''") {
                        self.state = .code
                        self.index += 3
                    } else {
                        self.index += 1
                    }
                }
            }
        }

        private mutating func code(_ byte: UInt8) {
            switch byte {
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"):
                self.index += 1
                return
            case UInt8(ascii: "#"):
                self.state = .comment
            case UInt8(ascii: "["):
                if self.atLineStart && !self.inValue {
                    self.checkTableHeader()
                } else if self.inValue {
                    self.arrayDepth += 1
                }
            case UInt8(ascii: "]"):
                if self.inValue { self.arrayDepth = max(0, self.arrayDepth - 1) }
            case UInt8(ascii: "}"):
                // toml++ asserts on a `}` where an array expects a value (`[1,}`).
                if self.arrayDepth > 0 && (self.lastSignificant == UInt8(ascii: "[") || self.lastSignificant == UInt8(ascii: ",")) {
                    self.findings.append(Finding(line: self.line, message: "syntax error: expected a value or ']', saw '}'"))
                }
            case UInt8(ascii: "="):
                self.inValue = true
            case UInt8(ascii: "\""):
                self.lastSignificant = byte
                self.state = self.startsWith("\"\"\"") ? .multilineBasicString : .basicString
                self.index += self.state == .basicString ? 1 : 3
                self.atLineStart = false
                return
            case UInt8(ascii: "'"):
                self.lastSignificant = byte
                self.state = self.startsWith("'''") ? .multilineLiteralString : .literalString
                self.index += self.state == .literalString ? 1 : 3
                self.atLineStart = false
                return
            default:
                if self.inValue { self.checkDateTime() }
            }
            if byte != UInt8(ascii: "#") { self.lastSignificant = byte }
            self.atLineStart = false
            self.index += 1
        }

        /// `[` or `[[` must be followed by a key: toml++ asserts on anything else (`[:`).
        private mutating func checkTableHeader() {
            var next = self.index + 1
            if next < self.bytes.count && self.bytes[next] == UInt8(ascii: "[") { next += 1 }
            while next < self.bytes.count && (self.bytes[next] == UInt8(ascii: " ") || self.bytes[next] == UInt8(ascii: "\t")) {
                next += 1
            }
            guard next < self.bytes.count, Self.canStartKey(self.bytes[next]) else {
                self.findings.append(Finding(line: self.line, message: "syntax error: a table header must start with a key"))
                return
            }
        }

        /// A date followed by `T` must go on with a time: toml++ asserts on anything else
        /// (`1979-05-27T:`).
        private mutating func checkDateTime() {
            let start = self.index
            guard start == 0 || !Self.isBareKeyByte(self.bytes[start - 1]), start + 11 <= self.bytes.count else { return }
            func digit(_ offset: Int) -> Bool { Self.isDigit(self.bytes[start + offset]) }
            let isDate = digit(0) && digit(1) && digit(2) && digit(3) && self.bytes[start + 4] == UInt8(ascii: "-")
                && digit(5) && digit(6) && self.bytes[start + 7] == UInt8(ascii: "-") && digit(8) && digit(9)
            guard isDate, self.bytes[start + 10] | 0x20 == UInt8(ascii: "t") else { return }
            if start + 11 == self.bytes.count || !digit(11) {
                self.findings.append(Finding(line: self.line, message: "syntax error: a time must follow the 'T' of a date"))
            }
        }

        private func startsWith(_ literal: StaticString) -> Bool {
            let count = literal.utf8CodeUnitCount
            guard self.index + count <= self.bytes.count else { return false }
            return (0..<count).allSatisfy { self.bytes[self.index + $0] == literal.utf8Start[$0] }
        }

        private static func isDigit(_ byte: UInt8) -> Bool {
            (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
        }

        private static func isBareKeyByte(_ byte: UInt8) -> Bool {
            isDigit(byte) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte | 0x20)
                || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
        }

        private static func canStartKey(_ byte: UInt8) -> Bool {
            isBareKeyByte(byte) || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "'") || byte == UInt8(ascii: "]")
        }
    }
}
