@testable import Breakwater
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

/// The proxy's own head writer (`HeadWriter`) and encoder (`HTTPMessageEncoder`, for responses
/// and requests): the exact bytes of a head, chunked framing, trailers, and promises in order. What it writes is also
/// read back with NIO's strict decoders, so a framing mistake shows up as a parse error.
@Suite struct WireFormatTests {
    @Test func aResponseHeadIsItsStatusLineFieldsAndBlankLine() throws {
        let channel = EmbeddedChannel(handler: Encoding())
        let headers: HTTPHeaders = ["Content-Type": "text/plain", "content-length": "2", "X-Note": "café"]
        try channel.writeOutbound(OutgoingHTTPPart.head(EncodedHead(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))))
        try channel.writeOutbound(OutgoingHTTPPart.body(.byteBuffer(ByteBuffer(string: "ok"))))
        try channel.writeOutbound(OutgoingHTTPPart.end(nil))
        #expect(try Self.written(by: channel) == "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 2\r\nX-Note: café\r\n\r\nok")
    }

    @Test func statusLinesFollowTheVersionAndTheStatus() throws {
        let cases: [(HTTPVersion, HTTPResponseStatus, String)] = [
            (.http1_0, .serviceUnavailable, "HTTP/1.0 503 Service Unavailable\r\n\r\n"),
            (.http1_1, .custom(code: 599, reasonPhrase: "Network Timeout"), "HTTP/1.1 599 Network Timeout\r\n\r\n"),
            (.http1_1, .switchingProtocols, "HTTP/1.1 101 Switching Protocols\r\n\r\n"),
        ]
        for (version, status, expected) in cases {
            let channel = EmbeddedChannel(handler: Encoding())
            try channel.writeOutbound(OutgoingHTTPPart.head(EncodedHead(HTTPResponseHead(version: version, status: status))))
            #expect(try Self.written(by: channel) == expected)
        }
    }

    /// A head far larger than any buffer's first guess is measured right and written whole.
    @Test func aLargeHeadIsWrittenWhole() throws {
        let channel = EmbeddedChannel(handler: Encoding())
        var headers = HTTPHeaders()
        for index in 0..<50 {
            headers.add(name: "x-field-\(index)", value: String(repeating: "v", count: 300))
        }
        try channel.writeOutbound(OutgoingHTTPPart.head(EncodedHead(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/a?b=c", headers: headers))))
        let written = try Self.written(by: channel)
        #expect(written.hasPrefix("GET /a?b=c HTTP/1.1\r\nx-field-0: vvv"))
        #expect(written.hasSuffix("x-field-49: \(String(repeating: "v", count: 300))\r\n\r\n"))
        let fieldLines = headers.map { "\($0.name): \($0.value)\r\n".utf8.count }.reduce(0, +)
        #expect(written.utf8.count == "GET /a?b=c HTTP/1.1\r\n".utf8.count + fieldLines + 2)
    }

    @Test func aChunkedRequestIsFramedAndReadsBackWithItsTrailers() throws {
        let channel = EmbeddedChannel(handler: Encoding())
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/upload", headers: ["host": "app", "transfer-encoding": "chunked"])
        try channel.writeOutbound(OutgoingHTTPPart.head(EncodedHead(head)))
        try channel.writeOutbound(OutgoingHTTPPart.body(.byteBuffer(ByteBuffer(string: "hello, "))))
        try channel.writeOutbound(OutgoingHTTPPart.body(.byteBuffer(ByteBuffer())))  // must not end the body
        try channel.writeOutbound(OutgoingHTTPPart.body(.byteBuffer(ByteBuffer(string: String(repeating: "x", count: 300)))))
        try channel.writeOutbound(OutgoingHTTPPart.end(["x-checksum": "abc"]))
        let written = try Self.written(by: channel)
        #expect(written.hasPrefix("POST /upload HTTP/1.1\r\nhost: app\r\ntransfer-encoding: chunked\r\n\r\n7\r\nhello, \r\n12c\r\nxxx"))
        #expect(written.hasSuffix("\r\n0\r\nx-checksum: abc\r\n\r\n"))

        let reader = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder()))
        try reader.writeInbound(ByteBuffer(string: written))
        var body = ""
        var trailers: HTTPHeaders?
        while let part = try reader.readInbound(as: HTTPServerRequestPart.self) {
            switch part {
            case .head(let decoded): #expect(decoded.uri == "/upload")
            case .body(let bytes): body += String(buffer: bytes)
            case .end(let end): trailers = end
            }
        }
        #expect(body == "hello, " + String(repeating: "x", count: 300))
        #expect(trailers?.first(name: "x-checksum") == "abc")
    }

    @Test func aChunkedResponseWithoutTrailersEndsWithTheLastChunk() throws {
        let channel = EmbeddedChannel(handler: Encoding())
        try channel.writeOutbound(OutgoingHTTPPart.head(EncodedHead(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["transfer-encoding": "chunked"]))))
        try channel.writeOutbound(OutgoingHTTPPart.body(.byteBuffer(ByteBuffer(string: "0123456789abcdef"))))
        try channel.writeOutbound(OutgoingHTTPPart.end(nil))
        #expect(try Self.written(by: channel) == "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n")
    }

    /// The first `Transfer-Encoding` decides, as NIO's `first(name:)` reads it.
    @Test func onlyTheFirstTransferEncodingDecidesChunking() throws {
        let channel = EmbeddedChannel(handler: Encoding())
        let headers = HTTPHeaders([("Transfer-Encoding", "gzip"), ("transfer-encoding", "chunked")])
        try channel.writeOutbound(OutgoingHTTPPart.head(EncodedHead(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))))
        try channel.writeOutbound(OutgoingHTTPPart.body(.byteBuffer(ByteBuffer(string: "raw"))))
        try channel.writeOutbound(OutgoingHTTPPart.end(nil))
        #expect(try Self.written(by: channel) == "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\nraw")
    }

    /// HTTP/1.0 has no chunks: a body is passed on as it is even if a header says otherwise.
    @Test func anHTTP10MessageIsNeverChunked() throws {
        let channel = EmbeddedChannel(handler: Encoding())
        try channel.writeOutbound(OutgoingHTTPPart.head(EncodedHead(HTTPResponseHead(version: .http1_0, status: .ok, headers: ["transfer-encoding": "chunked"]))))
        try channel.writeOutbound(OutgoingHTTPPart.body(.byteBuffer(ByteBuffer(string: "raw"))))
        try channel.writeOutbound(OutgoingHTTPPart.end(nil))
        #expect(try Self.written(by: channel) == "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\nraw")
    }

    /// The lingering close waits on the end's promise: it must complete, and only after the
    /// bytes before it were written.
    @Test func promisesCompleteInOrderWhenTheEndWritesNothing() throws {
        let channel = EmbeddedChannel(handler: Encoding())
        var completed: [String] = []
        let head = channel.eventLoop.makePromise(of: Void.self)
        let body = channel.eventLoop.makePromise(of: Void.self)
        let end = channel.eventLoop.makePromise(of: Void.self)
        head.futureResult.assumeIsolated().whenSuccess { completed.append("head") }
        body.futureResult.assumeIsolated().whenSuccess { completed.append("body") }
        end.futureResult.assumeIsolated().whenSuccess { completed.append("end") }
        let headers: HTTPHeaders = ["content-length": "2"]
        channel.write(OutgoingHTTPPart.head(EncodedHead(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: head)
        channel.write(OutgoingHTTPPart.body(.byteBuffer(ByteBuffer(string: "ok"))), promise: body)
        channel.writeAndFlush(OutgoingHTTPPart.end(nil), promise: end)
        #expect(completed == ["head", "body", "end"])
        #expect(try Self.written(by: channel) == "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    }

    /// A head is written into a buffer of a guessed size while it is measured, and written again
    /// when it outgrew the guess: both ways give the same bytes and the same framing.
    @Test func aHeadThatOutgrowsItsFirstBufferIsWrittenAgainTheSame() {
        let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: ["transfer-encoding": "chunked", "x-long": String(repeating: "y", count: 500)])
        let fitting = EncodedHead(head, expectedLength: 4096)
        for guess in [0, 1, 17, 64, 511] {
            let outgrown = EncodedHead(head, expectedLength: guess)
            #expect(outgrown == fitting)
        }
        #expect(fitting.isChunked)
        #expect(String(buffer: fitting.bytes) == "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-long: \(String(repeating: "y", count: 500))\r\n\r\n")
    }

    /// Lengths are written as digits in place: every width, and zero.
    @Test func decimalFieldsAreTheirDigits() {
        for value in [0, 7, 10, 99, 100, 5_120, 1_234_567, Int(Int32.max)] {
            let written = HeadWriter.written(allocator: ByteBufferAllocator(), expectedLength: 8) { $0.field("content-length", decimal: value) }
            #expect(String(buffer: written.bytes) == "content-length: \(value)\r\n")
        }
    }

    /// The first piece of a small body framed by length goes out in its head's buffer, as long
    /// as it fits in the room already there; a chunked body never does, since its pieces need
    /// their frames.
    @Test func aSmallBodyRidesInItsHeadsBufferWhenItFits() {
        let headText = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
        var head = EncodedHead(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["content-length": "2"]), expectedLength: 1024)
        let room = head.bytes.writableBytes
        #expect(room >= 2)

        var tooLarge = head
        let tooLargeAppended = tooLarge.appendBody(ifItFits: ByteBuffer(repeating: UInt8(ascii: "x"), count: room + 1))
        #expect(!tooLargeAppended)
        #expect(String(buffer: tooLarge.bytes) == headText)

        let appended = head.appendBody(ifItFits: ByteBuffer(string: "ok"))
        #expect(appended)
        #expect(String(buffer: head.bytes) == headText + "ok")

        var chunked = EncodedHead(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["transfer-encoding": "chunked"]), expectedLength: 1024)
        let chunkAppended = chunked.appendBody(ifItFits: ByteBuffer(string: "ok"))
        #expect(!chunkAppended)
        #expect(String(buffer: chunked.bytes) == "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    }

    /// The encoder says when a part wrote nothing (the end of a body framed by length, with no
    /// promise waiting on it), so `UpstreamHandler` can skip NIO's flush for it.
    @Test func theEndOfALengthFramedBodyWritesNothing() throws {
        let encoding = Encoding()
        let channel = EmbeddedChannel(handler: encoding)
        let parts: [OutgoingHTTPPart] = [
            .head(EncodedHead(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["content-length": "2"]))),
            .body(.byteBuffer(ByteBuffer(string: "ok"))),
            .end(nil),
            .head(EncodedHead(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["transfer-encoding": "chunked"]))),
            .end(nil),
        ]
        for part in parts {
            channel.write(part, promise: nil)  // no promise: `writeOutbound`'s would need a write
        }
        channel.flush()
        #expect(encoding.wrote == [true, true, false, true, true])
        #expect(try Self.written(by: channel).hasSuffix("\r\n\r\nok" + "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"))
    }

    /// `HTTPMessageEncoder` as `DownstreamHandler` and `UpstreamHandler` write through it, from a
    /// handler's context.
    private final class Encoding: ChannelOutboundHandler {
        typealias OutboundIn = OutgoingHTTPPart
        typealias OutboundOut = IOData
        private var encoder = HTTPMessageEncoder()
        /// What each write returned: whether it wrote anything.
        private(set) var wrote: [Bool] = []

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            self.wrote.append(self.encoder.write(self.unwrapOutboundIn(data), context: context, promise: promise))
        }
    }

    private static func written(by channel: EmbeddedChannel) throws -> String {
        var bytes = ByteBuffer()
        while let part = try channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(var buffer) = part else {
                Issue.record("a file region where bytes were expected")
                continue
            }
            bytes.writeBuffer(&buffer)
        }
        return String(buffer: bytes)
    }
}

extension EncodedHead {
    /// A head's fields as they are, written the way the proxy writes its own. The small first
    /// guess makes most heads here take the second pass too.
    fileprivate init(_ head: HTTPResponseHead, expectedLength: Int = 32) {
        self.init(allocator: ByteBufferAllocator(), expectedLength: expectedLength) { out in
            out.statusLine(version: head.version, status: head.status)
            for (name, value) in head.headers {
                out.field(name, value)
            }
            out.endHead()
        }
    }

    fileprivate init(_ head: HTTPRequestHead) {
        self.init(allocator: ByteBufferAllocator(), expectedLength: 32) { out in
            out.requestLine(method: head.method, target: head.uri, version: head.version)
            for (name, value) in head.headers {
                out.field(name, value)
            }
            out.endHead()
        }
    }
}
