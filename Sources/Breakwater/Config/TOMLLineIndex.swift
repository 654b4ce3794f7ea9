/// The line of each key and table in a TOML text, by key path (`server.threads`,
/// `route[2].breaker`).
///
/// TOMLKit reports lines for syntax errors only; a message about a key's value must still say
/// where the key is. This reads the lines the way a person does — table headers, array-of-table
/// headers counted per name, `key = value` lines (dotted and quoted keys included) — which is
/// enough for the files people write, and falls back to no line when unsure.
struct TOMLLineIndex {
    private var lines: [String: Int] = [:]

    init(_ text: String) {
        var table: [String] = []
        var arrayCounts: [String: Int] = [:]
        var inMultilineString: Substring?
        var bracketDepth = 0
        // Lines end at LF, as toml++ counts them: split by Character, a CRLF is one grapheme
        // and a CRLF file would be one long line.
        let text = text.hasPrefix("\u{FEFF}") ? String(text.dropFirst()) : text  // a byte order mark is no key
        for (offset, rawLine) in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            let lineNumber = offset + 1
            var line = Substring(rawLine)
            if line.utf8.last == UInt8(ascii: "\r") { line = Substring(line.utf8.dropLast()) }
            if let delimiter = inMultilineString {
                guard let end = line.firstRange(of: delimiter) else { continue }
                inMultilineString = nil
                line = line[end.upperBound...]
                continue
            }
            line = Self.strippingComment(line).drop { $0 == " " || $0 == "\t" }
            if bracketDepth > 0 {
                bracketDepth += Self.bracketBalance(line)
                continue
            }
            if line.hasPrefix("[[") {
                let name = Self.keyComponents(line.dropFirst(2).prefix { $0 != "]" })
                let joined = name.joined(separator: ".")
                arrayCounts[joined, default: 0] += 1
                table = Array(name.dropLast()) + ["\(name.last ?? "")[\(arrayCounts[joined]!)]"]
                self.record(name, line: lineNumber)  // the array itself starts at its first element
                self.record(table, line: lineNumber)
            } else if line.hasPrefix("[") {
                var name = Self.keyComponents(line.dropFirst().prefix { $0 != "]" })
                // `[route.breaker]` belongs to the latest `[[route]]`.
                if let first = name.first, let count = arrayCounts[first] {
                    name[0] = "\(first)[\(count)]"
                }
                table = name
                self.record(table, line: lineNumber)
            } else if let equals = Self.firstUnquoted("=", in: line) {
                let key = Self.keyComponents(line[..<equals])
                self.record(table + key, line: lineNumber)
                let value = line[line.index(after: equals)...].drop { $0 == " " }
                for delimiter in ["\"\"\"", "'''"] where value.hasPrefix(delimiter) {
                    if value.dropFirst(3).firstRange(of: delimiter) == nil {
                        inMultilineString = Substring(delimiter)
                    }
                }
                bracketDepth = max(0, Self.bracketBalance(value))
            }
        }
    }

    /// The line of `keyPath`, or of the nearest enclosing table that has one.
    func line(of keyPath: String) -> Int? {
        var path = keyPath
        while !path.isEmpty {
            if let line = self.lines[path] { return line }
            // `route[2].breaker` -> `route[2]` -> `route` (an inline array of tables has no
            // header per element, only the line of its key).
            if path.hasSuffix("]"), let bracket = path.lastIndex(of: "[") {
                path = String(path[..<bracket])
            } else if let dot = path.lastIndex(of: ".") {
                path = String(path[..<dot])
            } else {
                return nil
            }
        }
        return nil
    }

    /// The line of exactly `keyPath`, without falling back to its table.
    func exactLine(of keyPath: String) -> Int? {
        self.lines[keyPath]
    }

    /// Records the line of `components` and, where they have none yet, of the tables it
    /// implies: `[route.fallback]` without a `[[route]]` makes `route` a table right there.
    private mutating func record(_ components: [String], line: Int) {
        for count in 1...max(1, components.count) {
            let path = components.prefix(count).joined(separator: ".")
            if self.lines[path] == nil {
                self.lines[path] = line
            }
        }
    }

    private static func keyComponents(_ text: Substring) -> [String] {
        var components: [String] = []
        var current = ""
        var quote: Character?
        for character in text {
            if let open = quote {
                if character == open { quote = nil } else { current.append(character) }
            } else if character == "\"" || character == "'" {
                quote = character
            } else if character == "." {
                components.append(current)
                current = ""
            } else if character != " " && character != "\t" {
                current.append(character)
            }
        }
        components.append(current)
        return components
    }

    /// The first `character` outside quotes: the `=` of `key = value`, the `#` of a comment.
    private static func firstUnquoted(_ target: Character, in line: Substring) -> Substring.Index? {
        var quote: Character?
        for index in line.indices {
            let character = line[index]
            if let open = quote {
                if character == open { quote = nil }
            } else if character == "\"" || character == "'" {
                quote = character
            } else if character == target {
                return index
            }
        }
        return nil
    }

    private static func strippingComment(_ line: Substring) -> Substring {
        self.firstUnquoted("#", in: line).map { line[..<$0] } ?? line
    }

    /// Open minus closed brackets outside strings: a multi-line array continues while positive.
    private static func bracketBalance(_ text: Substring) -> Int {
        var balance = 0
        var quote: Character?
        for character in self.strippingComment(text) {
            if let open = quote {
                if character == open { quote = nil }
            } else if character == "\"" || character == "'" {
                quote = character
            } else if character == "[" {
                balance += 1
            } else if character == "]" {
                balance -= 1
            }
        }
        return balance
    }
}
