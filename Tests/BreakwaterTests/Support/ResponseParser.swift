/// Parses one HTTP/1.x response from the front of a byte stream, leniently enough for tests
/// and strictly enough to notice a response spliced from two.
struct ResponseParser {
    private let bytes: [UInt8]
    private(set) var head: RawResponse
    /// Bytes of the stream this response took, head and (after `parseWhole`) body.
    private(set) var consumed: Int

    /// Nil until the whole head has arrived.
    init?(_ bytes: [UInt8]) {
        guard let end = Self.find([13, 10, 13, 10], in: bytes, from: 0) else { return nil }
        let lines = String(decoding: bytes[..<end], as: UTF8.self).components(separatedBy: "\r\n")
        let statusLine = lines[0].split(separator: " ", maxSplits: 2)
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { return nil }
        var headers: [(name: String, value: String)] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        self.bytes = bytes
        self.head = RawResponse(status: status, version: String(statusLine[0]), headers: headers, body: [])
        self.consumed = end + 4
    }

    /// The response with its body, or nil while more bytes are needed.
    mutating func parseWhole(isHeadRequest: Bool, closed: Bool) -> RawResponse? {
        var response = self.head
        let status = response.status
        if isHeadRequest || (100..<200).contains(status) || status == 204 || status == 304 {
            return response
        }
        if response.header("transfer-encoding")?.lowercased().contains("chunked") == true {
            var position = self.consumed
            var body: [UInt8] = []
            while true {
                guard let lineEnd = Self.find([13, 10], in: self.bytes, from: position) else { return nil }
                let sizeText = String(decoding: self.bytes[position..<lineEnd], as: UTF8.self).split(separator: ";").first ?? ""
                guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else { return nil }
                position = lineEnd + 2
                if size == 0 {
                    // Trailers, if any, end with an empty line.
                    guard let trailersEnd = Self.find([13, 10], in: self.bytes, from: position) else { return nil }
                    var end = trailersEnd
                    while end != position {
                        position = end + 2
                        guard let next = Self.find([13, 10], in: self.bytes, from: position) else { return nil }
                        end = next
                    }
                    self.consumed = end + 2
                    response.body = body
                    return response
                }
                guard self.bytes.count >= position + size + 2 else { return nil }
                body += self.bytes[position..<position + size]
                position += size + 2
            }
        }
        if let length = response.header("content-length").flatMap(Int.init) {
            guard self.bytes.count >= self.consumed + length else { return nil }
            response.body = Array(self.bytes[self.consumed..<self.consumed + length])
            self.consumed += length
            return response
        }
        guard closed else { return nil }
        response.body = Array(self.bytes[self.consumed...])
        self.consumed = self.bytes.count
        return response
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        var index = start
        while index <= haystack.count - needle.count {
            if haystack[index] == needle[0] && Array(haystack[index..<index + needle.count]) == needle {
                return index
            }
            index += 1
        }
        return nil
    }
}
