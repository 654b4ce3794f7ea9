@testable import Breakwater
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

/// `HTTPParser` reads what NIO's HTTP/1 decoders read, however the bytes are split: every
/// stream here goes through both — whole, cut in two at every position, and a byte at a time —
/// and what each delivers (heads, body bytes, ends and trailers, errors, the bytes behind a
/// protocol switch) must be the same. NIO's decoder is the oracle: Breakwater's parser is llhttp
/// as NIO drives it, without NIO's machinery around it.
@Suite struct HTTPParserTests {
    /// Requests: well-formed, pipelined, upgrading, and the malformed kinds request smuggling
    /// is made of.
    static let requestStreams: [String] = [
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a?b=c HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
        "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world",
        "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\nX-Other: d\r\n\r\n",
        "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcHEAD /3 HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\u{81}\u{05}hello frames",
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\ntunnelled bytes",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http://example.com/abs HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "PROPFIND /dav HTTP/1.1\r\nHost: a\r\nDepth: 1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Latin: caf\u{E9}\r\nX-Empty:\r\nX-Spaces:   padded   \r\n\r\n",
        // Malformed.
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
        "GET / HTTP/1.1\nHost: a\n\n",
        "G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\n: empty\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n" + String(repeating: "X-Many: 1\r\n", count: 101) + "\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + String(repeating: "b", count: 600) + "\r\n\r\n",
        "GET /" + String(repeating: "u", count: 600) + " HTTP/1.1\r\nHost: a\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nshort",  // cut short by the close
        "GET / HTTP/1.1\r\nHost: a\r\n",  // a head cut short by the close
    ]

    /// Responses, each with the methods of the requests they answer.
    static let responseStreams: [(methods: [HTTPMethod], bytes: String)] = [
        ([.GET], "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
        ([.GET], "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnope\r\n0\r\nX-T: 1\r\n\r\n"),
        ([.HEAD, .GET], "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        ([.GET, .GET], "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"),
        ([.POST], "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"),
        ([.GET], "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\u{81}\u{02}hi"),
        ([.GET], "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the close"),
        ([.GET], "HTTP/1.0 200 OK\r\n\r\nuntil the close"),
        ([.GET], "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"),  // cut short by the close
        ([.GET], "HTTP/1.1 2x0 OK\r\n\r\n"),
        ([.GET], "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
        ([.GET], "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nuntil the close"),
        ([.GET], "HTTP/1.1 200 OK\r\n" + String(repeating: "X-Many: 1\r\n", count: 101) + "\r\n"),
        ([.GET], "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n"),
    ]

    /// The limits both readers get here: a 512-byte head (small, so the limits are reached).
    static let limits = HTTPParser.Limits(maxPieceBytes: 512, maxHeadBytes: 512, maxFields: 100)
    static var nioLimits: NIOHTTPDecoderLimitConfiguration {
        var limits = NIOHTTPDecoderLimitConfiguration()
        (limits.maxHeaderFieldSize, limits.maxHeaderListSize, limits.maxHeaderFieldCount) = (512, 512, 100)
        return limits
    }

    @Test(arguments: Self.requestStreams)
    func requestsReadAsNIOReadsThem(_ stream: String) throws {
        let bytes = Array(stream.utf8)
        let expected = try Self.nioReads(bytes, splitAt: [], kind: .request, methods: [])
        #expect(!expected.isEmpty)
        for split in Self.splits(of: bytes.count) {
            let actual = Self.parserReads(bytes, splitAt: split, kind: .request, methods: [])
            #expect(actual == expected, "split at \(split)")
            if actual != expected { return }
        }
    }

    @Test(arguments: Self.responseStreams.indices)
    func responsesReadAsNIOReadsThem(_ index: Int) throws {
        let (methods, stream) = Self.responseStreams[index]
        let bytes = Array(stream.utf8)
        let expected = try Self.nioReads(bytes, splitAt: [], kind: .response, methods: methods)
        #expect(!expected.isEmpty)
        for split in Self.splits(of: bytes.count) {
            let actual = Self.parserReads(bytes, splitAt: split, kind: .response, methods: methods)
            #expect(actual == expected, "split at \(split)")
            if actual != expected { return }
        }
    }

    /// A piece of a head that runs on into the next read is kept: here every field is cut.
    @Test func aHeadCutInEveryPieceReadsWhole() {
        let head = Array("GET /path HTTP/1.1\r\nHost: example.com\r\nX-Long-Name: a longer value\r\n\r\n".utf8)
        let events = Self.parserReads(head, splitAt: Array(stride(from: 3, to: head.count, by: 3)), kind: .request, methods: [])
        #expect(events == [.head("GET /path HTTP/1.1 [Host: example.com] [X-Long-Name: a longer value]"), .end(nil)])
    }

    /// One answer to a malformed stream is enough: a well-formed request read after the
    /// failure is dropped, not delivered, and the connection's end reports nothing more.
    @Test func nothingIsParsedAfterAFailure() throws {
        let recorder = Recorder()
        let parser = HTTPParser(kind: .request, limits: Self.limits)
        parser.delegate = recorder
        #expect(throws: HTTPParserError.invalidMethod) {
            try parser.parse(ByteBuffer(string: "G@T / HTTP/1.1\r\nHost: a\r\n\r\n"))
        }
        let after = try parser.parse(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
        #expect(after == .dropped)
        try parser.finish()
        #expect(recorder.events.isEmpty)
    }

    // MARK: What each reader delivers

    enum Event: Equatable, CustomStringConvertible {
        case head(String)
        case body([UInt8])
        case end(String?)
        case error(String)
        /// Bytes behind a protocol switch.
        case rest([UInt8])

        var description: String {
            switch self {
            case .head(let head): "head(\(head))"
            case .body(let bytes): "body(\(String(decoding: bytes, as: UTF8.self)))"
            case .end(let trailers): "end(\(trailers ?? "-"))"
            case .error(let error): "error(\(error))"
            case .rest(let bytes): "rest(\(String(decoding: bytes, as: UTF8.self)))"
            }
        }
    }

    /// Whole, cut in two at every position, and a byte at a time.
    static func splits(of count: Int) -> [[Int]] {
        [[]] + (1..<max(count, 1)).map { [$0] } + [Array(1..<max(count, 1))]
    }

    static func describe(_ version: HTTPVersion, _ headers: HTTPHeaders) -> String {
        "HTTP/\(version.major).\(version.minor)" + headers.map { " [\($0.name): \($0.value)]" }.joined()
    }

    static func describe(_ trailers: HTTPHeaders?) -> String? {
        trailers.map { $0.map { "\($0.name): \($0.value)" }.joined(separator: ", ") }
    }

    static func pieces(of bytes: [UInt8], splitAt split: [Int]) -> [ByteBuffer] {
        zip([0] + split, split + [bytes.count]).map { ByteBuffer(bytes: bytes[$0..<$1]) }
    }

    /// Adjacent body pieces as one: how the body is cut depends on the reads.
    static func append(_ event: Event, to events: inout [Event]) {
        if case .body(let more) = event, case .body(let before)? = events.last {
            events[events.count - 1] = .body(before + more)
        } else if case .rest(let more) = event, case .rest(let before)? = events.last {
            events[events.count - 1] = .rest(before + more)
        } else {
            events.append(event)
        }
    }

    /// What NIO's decoder makes of `bytes`, up to its first error, and at the close.
    static func nioReads(_ bytes: [UInt8], splitAt split: [Int], kind: HTTPParser.Kind, methods: [HTTPMethod]) throws -> [Event] {
        let channel = EmbeddedChannel()
        let removeDecoder: () -> Void
        switch kind {
        case .request:
            let handler = ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes, limitConfiguration: Self.nioLimits))
            try channel.pipeline.syncOperations.addHandler(handler)
            removeDecoder = { channel.pipeline.syncOperations.removeHandler(handler, promise: nil) }
        case .response:
            let decoder = HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes, informationalResponseStrategy: .drop, limitConfiguration: Self.nioLimits)
            for method in methods {
                decoder.write(data: .head(HTTPRequestHead(version: .http1_1, method: method, uri: "/")))
            }
            let handler = ByteToMessageHandler(decoder)
            try channel.pipeline.syncOperations.addHandler(handler)
            removeDecoder = { channel.pipeline.syncOperations.removeHandler(handler, promise: nil) }
        }
        var events: [Event] = []
        /// The parts NIO delivered so far, each head told as `describeHead` tells it.
        func drain<Head>(_ type: HTTPPart<Head, ByteBuffer>.Type, describeHead: (Head) -> String) throws {
            while let part = try channel.readInbound(as: type) {
                switch part {
                case .head(let head): append(.head(describeHead(head)), to: &events)
                case .body(let body): append(.body(Array(body.readableBytesView)), to: &events)
                case .end(let trailers): append(.end(describe(trailers)), to: &events)
                }
            }
        }
        func read() throws {
            switch kind {
            case .request: try drain(HTTPServerRequestPart.self) { "\($0.method.rawValue) \($0.uri) " + describe($0.version, $0.headers) }
            case .response: try drain(HTTPClientResponsePart.self) { "\($0.status.code) " + describe($0.version, $0.headers) }
            }
        }
        for piece in Self.pieces(of: bytes, splitAt: split) {
            do {
                try channel.writeInbound(piece)
                try read()
            } catch {
                try read()
                append(.error("\(error)"), to: &events)
                return events
            }
        }
        if case .end? = events.last {
            // Bytes behind a switch stay in NIO's decoder until it leaves, as for a tunnel.
            removeDecoder()  // on the next loop tick
            channel.embeddedEventLoop.run()
            while let rest = try channel.readInbound(as: ByteBuffer.self) {
                append(.rest(Array(rest.readableBytesView)), to: &events)
            }
            return events
        }
        do {
            channel.pipeline.fireChannelInactive()
            try read()
            try channel.throwIfErrorCaught()
        } catch {
            append(.error("\(error)"), to: &events)
        }
        return events
    }

    /// What `HTTPParser` makes of `bytes`, read by `split`, and at the close.
    static func parserReads(_ bytes: [UInt8], splitAt split: [Int], kind: HTTPParser.Kind, methods: [HTTPMethod]) -> [Event] {
        let recorder = Recorder()
        let parser = HTTPParser(kind: kind, limits: Self.limits)
        parser.delegate = recorder
        var methods = methods[...]
        if let first = methods.popFirst() { parser.expectResponse(to: first) }
        for piece in Self.pieces(of: bytes, splitAt: split) {
            var next: ByteBuffer? = piece
            do {
                while let bytes = next {
                    next = nil
                    switch try parser.parse(bytes) {
                    case .needMoreBytes, .switched:
                        break
                    case .messageEnded(let rest):
                        if let method = methods.popFirst() { parser.expectResponse(to: method) }
                        next = rest
                    case .dropped:
                        append(.error("parsed after its failure"), to: &recorder.events)
                    }
                }
            } catch {
                append(.error("\(error)"), to: &recorder.events)
                return recorder.events
            }
        }
        if let rest = parser.takeBytesAfterSwitch() {
            append(.rest(Array(rest.readableBytesView)), to: &recorder.events)
        }
        do {
            try parser.finish()
        } catch {
            append(.error("\(error)"), to: &recorder.events)
        }
        return recorder.events
    }

    final class Recorder: HTTPParserDelegate {
        var events: [Event] = []
        func parsedHead(_ head: HTTPParser.Head) {
            let described = switch head {
            case .request(let head): "\(head.method.rawValue) \(head.uri) " + HTTPParserTests.describe(head.version, head.headers.httpHeaders)
            case .response(let head): "\(head.status.code) " + HTTPParserTests.describe(head.version, head.headers.httpHeaders)
            }
            HTTPParserTests.append(.head(described), to: &self.events)
        }
        func parsedBody(_ body: ByteBuffer) {
            HTTPParserTests.append(.body(Array(body.readableBytesView)), to: &self.events)
        }
        func parsedEnd(trailers: HTTPHeaders?) {
            HTTPParserTests.append(.end(HTTPParserTests.describe(trailers)), to: &self.events)
        }
    }
}
