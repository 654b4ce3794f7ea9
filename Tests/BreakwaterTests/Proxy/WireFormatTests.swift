@testable import Breakwater
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

/// The proxy's own encoder (`HTTPMessageEncoder`, for responses and requests): the exact
/// bytes of a head, chunked framing, trailers, and promises in order. What it writes is also
/// read back with NIO's strict decoders, so a framing mistake shows up as a parse error.
@Suite struct WireFormatTests {
    @Test func aResponseHeadIsItsStatusLineFieldsAndBlankLine() throws {
        let channel = EmbeddedChannel(handler: Encoding<HTTPResponseHead>())
        let headers: HTTPHeaders = ["Content-Type": "text/plain", "content-length": "2", "X-Note": "café"]
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)))
        try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "ok"))))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        #expect(try Self.written(by: channel) == "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 2\r\nX-Note: café\r\n\r\nok")
    }

    @Test func statusLinesFollowTheVersionAndTheStatus() throws {
        let cases: [(HTTPVersion, HTTPResponseStatus, String)] = [
            (.http1_0, .serviceUnavailable, "HTTP/1.0 503 Service Unavailable\r\n\r\n"),
            (.http1_1, .custom(code: 599, reasonPhrase: "Network Timeout"), "HTTP/1.1 599 Network Timeout\r\n\r\n"),
            (.http1_1, .switchingProtocols, "HTTP/1.1 101 Switching Protocols\r\n\r\n"),
        ]
        for (version, status, expected) in cases {
            let channel = EmbeddedChannel(handler: Encoding<HTTPResponseHead>())
            try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: version, status: status)))
            #expect(try Self.written(by: channel) == expected)
        }
    }

    /// A head far larger than any buffer's first guess is measured right and written whole.
    @Test func aLargeHeadIsWrittenWhole() throws {
        let channel = EmbeddedChannel(handler: Encoding<HTTPRequestHead>())
        var headers = HTTPHeaders()
        for index in 0..<50 {
            headers.add(name: "x-field-\(index)", value: String(repeating: "v", count: 300))
        }
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/a?b=c", headers: headers)))
        let written = try Self.written(by: channel)
        #expect(written.hasPrefix("GET /a?b=c HTTP/1.1\r\nx-field-0: vvv"))
        #expect(written.hasSuffix("x-field-49: \(String(repeating: "v", count: 300))\r\n\r\n"))
        let fieldLines = headers.map { "\($0.name): \($0.value)\r\n".utf8.count }.reduce(0, +)
        #expect(written.utf8.count == "GET /a?b=c HTTP/1.1\r\n".utf8.count + fieldLines + 2)
    }

    @Test func aChunkedRequestIsFramedAndReadsBackWithItsTrailers() throws {
        let channel = EmbeddedChannel(handler: Encoding<HTTPRequestHead>())
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: "/upload", headers: ["host": "app", "transfer-encoding": "chunked"])
        try channel.writeOutbound(HTTPClientRequestPart.head(head))
        try channel.writeOutbound(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: "hello, "))))
        try channel.writeOutbound(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer())))  // must not end the body
        try channel.writeOutbound(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(string: String(repeating: "x", count: 300)))))
        try channel.writeOutbound(HTTPClientRequestPart.end(["x-checksum": "abc"]))
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
        let channel = EmbeddedChannel(handler: Encoding<HTTPResponseHead>())
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: ["transfer-encoding": "chunked"])))
        try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "0123456789abcdef"))))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        #expect(try Self.written(by: channel) == "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n")
    }

    /// The first `Transfer-Encoding` decides, as NIO's `first(name:)` reads it.
    @Test func onlyTheFirstTransferEncodingDecidesChunking() throws {
        let channel = EmbeddedChannel(handler: Encoding<HTTPResponseHead>())
        let headers = HTTPHeaders([("Transfer-Encoding", "gzip"), ("transfer-encoding", "chunked")])
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)))
        try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "raw"))))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        #expect(try Self.written(by: channel) == "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\nraw")
    }

    /// HTTP/1.0 has no chunks: a body is passed on as it is even if a header says otherwise.
    @Test func anHTTP10MessageIsNeverChunked() throws {
        let channel = EmbeddedChannel(handler: Encoding<HTTPResponseHead>())
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_0, status: .ok, headers: ["transfer-encoding": "chunked"])))
        try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "raw"))))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        #expect(try Self.written(by: channel) == "HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\nraw")
    }

    /// The lingering close waits on the end's promise: it must complete, and only after the
    /// bytes before it were written.
    @Test func promisesCompleteInOrderWhenTheEndWritesNothing() throws {
        let channel = EmbeddedChannel(handler: Encoding<HTTPResponseHead>())
        var completed: [String] = []
        let head = channel.eventLoop.makePromise(of: Void.self)
        let body = channel.eventLoop.makePromise(of: Void.self)
        let end = channel.eventLoop.makePromise(of: Void.self)
        head.futureResult.whenSuccess { completed.append("head") }
        body.futureResult.whenSuccess { completed.append("body") }
        end.futureResult.whenSuccess { completed.append("end") }
        let headers: HTTPHeaders = ["content-length": "2"]
        channel.write(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)), promise: head)
        channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "ok"))), promise: body)
        channel.writeAndFlush(HTTPServerResponsePart.end(nil), promise: end)
        #expect(completed == ["head", "body", "end"])
        #expect(try Self.written(by: channel) == "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    }

    /// `HTTPMessageEncoder` as `DownstreamHandler` and `UpstreamHandler` write through it, from a
    /// handler's context.
    private final class Encoding<Head: HTTPMessageHead & Equatable>: ChannelOutboundHandler {
        typealias OutboundIn = HTTPPart<Head, IOData>
        typealias OutboundOut = IOData
        private var encoder = HTTPMessageEncoder()

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            self.encoder.write(self.unwrapOutboundIn(data), context: context, promise: promise)
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
