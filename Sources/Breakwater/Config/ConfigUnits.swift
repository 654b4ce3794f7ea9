/// The value syntaxes of proxy.conf beyond TOML's own: durations, sizes and addresses.
/// Each returns nil on bad input; the reader turns that into a message that shows the syntax.
enum ConfigUnits {
    /// "250ms", "2s", "1.5m", "1h".
    static func duration(_ text: String) -> Duration? {
        let units: [(suffix: String, nanoseconds: Double)] = [
            ("ms", 1e6), ("us", 1e3), ("s", 1e9), ("m", 60e9), ("h", 3600e9),
        ]
        let trimmed = text.trimmingASCIISpaces()
        for (suffix, scale) in units where trimmed.hasSuffix(suffix) {
            let number = trimmed.dropLast(suffix.count)
            guard let value = Double(number), value.isFinite, value >= 0, number.first?.isNumber == true else { return nil }
            let nanoseconds = value * scale
            guard nanoseconds < 1e18 else { return nil }
            return .nanoseconds(Int64(nanoseconds.rounded()))
        }
        return nil
    }

    /// "64KB", "10MB", "1GB", "512B" (KB = 1024 bytes; "KiB" and friends also accepted).
    static func size(_ text: String) -> Int? {
        let units: [(suffix: String, bytes: Int)] = [
            ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30),
            ("KB", 1 << 10), ("MB", 1 << 20), ("GB", 1 << 30), ("B", 1),
        ]
        let trimmed = text.trimmingASCIISpaces()
        for (suffix, scale) in units where trimmed.uppercased().hasSuffix(suffix.uppercased()) {
            let number = trimmed.dropLast(suffix.count).trimmingASCIISpaces()
            guard let value = Double(number), value.isFinite, value >= 0, value * Double(scale) < 1e15 else { return nil }
            return Int(value * Double(scale))
        }
        return nil
    }

    /// "127.0.0.1:8080", "[::1]:8080", "localhost:8080".
    static func hostPort(_ text: String) -> HostPort? {
        let host: Substring
        let port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            port = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else { return nil }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, !host.contains(where: \.isWhitespace), let number = Int(port), (0...65535).contains(number) else {
            return nil
        }
        return HostPort(host: String(host), port: number)
    }

    /// "host:port" or "unix:/absolute/path".
    static func upstream(_ text: String) -> UpstreamAddress? {
        if text.hasPrefix("unix:") {
            let path = String(text.dropFirst("unix:".count))
            return path.hasPrefix("/") ? .unix(path: path) : nil
        }
        return self.hostPort(text).map(UpstreamAddress.tcp)
    }

    /// An HTTP token (RFC 9110 §5.6.2): header names and methods.
    static func isToken(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                true
            default:
                "!#$%&'*+-.^_`|~".utf8.contains(byte)
            }
        }
    }
}

extension StringProtocol {
    fileprivate func trimmingASCIISpaces() -> String {
        String(self.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
