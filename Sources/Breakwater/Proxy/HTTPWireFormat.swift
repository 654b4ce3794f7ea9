import NIOCore
import NIOHTTP1

/// HTTP/1.1 messages as bytes, for `HTTPMessageEncoder`.
///
/// A head is measured first and then copied in one pass: one capacity check, one copy per
/// string. NIO's encoders write each of the four pieces of a header line with its own
/// `writeString`, each paying an exclusivity check and index arithmetic; on a small proxied
/// request that came to a tenth of the proxy's instructions, for the two heads it writes.
extension ByteBuffer {
    /// `HTTP/1.1 200 OK`, the fields and the blank line that ends them.
    mutating func writeResponseHead(_ head: HTTPResponseHead) {
        let code = String(head.status.code)
        let reason = head.status.reasonPhrase
        let length = 9 + code.utf8.count + 1 + reason.utf8.count + 2 + head.headers.wireLength
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { memory in
            var out = HeadBytes(memory)
            out.append(head.version.isHTTP10 ? "HTTP/1.0 " : "HTTP/1.1 ")
            out.append(code)
            out.append(" ")
            out.append(reason)
            out.append("\r\n")
            out.append(fields: head.headers)
            return out.count
        }
    }

    /// `GET /path HTTP/1.1`, the fields and the blank line that ends them.
    mutating func writeRequestHead(_ head: HTTPRequestHead) {
        let method = head.method.rawValue
        let length = method.utf8.count + 1 + head.uri.utf8.count + 11 + head.headers.wireLength
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { memory in
            var out = HeadBytes(memory)
            out.append(method)
            out.append(" ")
            out.append(head.uri)
            out.append(head.version.isHTTP10 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n")
            out.append(fields: head.headers)
            return out.count
        }
    }

    /// Header fields and the blank line that ends them: a chunked message's trailers.
    fileprivate mutating func writeFields(_ fields: HTTPHeaders) {
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: fields.wireLength) { memory in
            var out = HeadBytes(memory)
            out.append(fields: fields)
            return out.count
        }
    }
}

/// Copies text into memory that `ByteBuffer` measured out for it.
private struct HeadBytes {
    private let start: UnsafeMutableRawPointer
    private let capacity: Int
    private(set) var count = 0

    init(_ memory: UnsafeMutableRawBufferPointer) {
        self.start = memory.baseAddress!
        self.capacity = memory.count
    }

    mutating func append(_ text: StaticString) {
        self.append(text.utf8Start, count: text.utf8CodeUnitCount)
    }

    mutating func append(_ text: String) {
        let copied: Void? = text.utf8.withContiguousStorageIfAvailable { self.append($0.baseAddress, count: $0.count) }
        if copied == nil {
            var text = text  // a bridged string: made native, once, to be read in place
            text.withUTF8 { self.append($0.baseAddress, count: $0.count) }
        }
    }

    mutating func append(fields: HTTPHeaders) {
        for (name, value) in fields {
            self.append(name)
            self.append(": ")
            self.append(value)
            self.append("\r\n")
        }
        self.append("\r\n")
    }

    private mutating func append(_ bytes: UnsafePointer<UInt8>?, count: Int) {
        guard let bytes, count > 0 else { return }
        precondition(self.count + count <= self.capacity, "a head outgrew its measure")
        (self.start + self.count).copyMemory(from: bytes, byteCount: count)
        self.count += count
    }
}

extension HTTPHeaders {
    /// The bytes of `name: value\r\n` for each field, and the blank line after them.
    fileprivate var wireLength: Int {
        self.reduce(2) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
    }
}

extension HTTPVersion {
    fileprivate var isHTTP10: Bool { self.major == 1 && self.minor == 0 }
}

/// A message head the encoder can write: a request's or a response's.
protocol HTTPMessageHead {
    var version: HTTPVersion { get }
    var headers: HTTPHeaders { get }
    func write(to buffer: inout ByteBuffer)
}

extension HTTPRequestHead: HTTPMessageHead {
    func write(to buffer: inout ByteBuffer) { buffer.writeRequestHead(self) }
}

extension HTTPResponseHead: HTTPMessageHead {
    func write(to buffer: inout ByteBuffer) { buffer.writeResponseHead(self) }
}

/// Writes one direction's HTTP/1.1 messages as bytes, in place of NIO's encoders: the head in
/// one pass, the body as it comes, passed on as it is or framed as chunks when the head said
/// `Transfer-Encoding: chunked` (RFC 9112 §7.1). Framing headers are the exchange's business
/// (`HeaderRewriting` declares them per hop); this only follows them.
///
/// A value its owner writes through, from the owner's channel context: `DownstreamHandler` for
/// the answers to a client, `UpstreamHandler` for the requests to the app.
struct HTTPMessageEncoder {
    private var isChunked = false

    mutating func write<Head: HTTPMessageHead>(
        _ part: HTTPPart<Head, IOData>,
        context: ChannelHandlerContext,
        promise: EventLoopPromise<Void>?
    ) {
        switch part {
        case .head(let head):
            var bytes = context.channel.allocator.buffer(capacity: 0)
            head.write(to: &bytes)
            self.isChunked = head.version.speaksChunked && head.headers.first(name: "transfer-encoding") == "chunked"
            context.write(NIOAny(IOData.byteBuffer(bytes)), promise: promise)
        case .body(let body):
            self.write(body, context: context, promise: promise)
        case .end(let trailers):
            self.end(trailers: trailers, context: context, promise: promise)
        }
    }

    private func write(_ body: IOData, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        // An empty chunk would end the body: nothing of it goes out, but its promise still
        // completes in order with the bytes before it.
        guard self.isChunked, body.readableBytes > 0 else {
            context.write(NIOAny(body), promise: promise)
            return
        }
        var frame = context.channel.allocator.buffer(capacity: 18)
        frame.writeString(String(body.readableBytes, radix: 16))
        frame.writeStaticString("\r\n")
        context.write(NIOAny(IOData.byteBuffer(frame)), promise: nil)
        context.write(NIOAny(body), promise: nil)
        // The same storage again, showing only its CRLF: no second allocation.
        frame.moveReaderIndex(forwardBy: frame.readableBytes - 2)
        context.write(NIOAny(IOData.byteBuffer(frame)), promise: promise)
    }

    private mutating func end(trailers: HTTPHeaders?, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        defer { self.isChunked = false }
        if self.isChunked {
            var last = context.channel.allocator.buffer(capacity: 5)
            last.writeStaticString("0\r\n")
            last.writeFields(trailers ?? [:])
            context.write(NIOAny(IOData.byteBuffer(last)), promise: promise)
        } else if let promise {
            // Nothing to write (a length-framed body ends by itself), but the promise must
            // complete in order with the bytes before it.
            context.write(NIOAny(IOData.byteBuffer(context.channel.allocator.buffer(capacity: 0))), promise: promise)
        }
    }
}
