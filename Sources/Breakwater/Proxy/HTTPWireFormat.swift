import NIOCore
import NIOHTTP1

/// HTTP/1.1 message heads as bytes, for `HTTPMessageEncoder`.
///
/// A head is measured first and then copied in one pass: one allocation of the right size, one
/// copy per string. NIO's encoders write each of the four pieces of a header line with its own
/// `writeString`, each paying an exclusivity check and index arithmetic; on a small proxied
/// request that came to a tenth of the proxy's instructions, for the two heads it writes.
protocol HTTPMessageHead {
    /// The head's bytes, and whether its body is to be chunked: its version speaks chunked and
    /// its first `Transfer-Encoding` says `chunked` (as `HeaderRewriting` sets it per hop),
    /// learned in the pass that measures the fields, not in a search of its own.
    func encoded(allocator: ByteBufferAllocator) -> (bytes: ByteBuffer, isChunked: Bool)
}

extension HTTPResponseHead: HTTPMessageHead {
    /// `HTTP/1.1 200 OK`, the fields and the blank line that ends them.
    func encoded(allocator: ByteBufferAllocator) -> (bytes: ByteBuffer, isChunked: Bool) {
        let code = self.status.code
        let reason = self.status.reasonPhrase
        let fields = FieldsMeasure(self.headers)
        let length = 9 + HeadBytes.decimalDigits(code) + 1 + reason.utf8.count + 2 + fields.length
        var bytes = allocator.buffer(capacity: length)
        bytes.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { memory in
            var out = HeadBytes(memory)
            out.append(self.version.isHTTP10 ? "HTTP/1.0 " : "HTTP/1.1 ")
            out.append(decimal: code)
            out.append(" ")
            out.append(reason)
            out.append("\r\n")
            out.append(fields: self.headers)
            return out.count
        }
        return (bytes, self.version.speaksChunked && fields.declaresChunked)
    }
}

extension HTTPRequestHead: HTTPMessageHead {
    /// `GET /path HTTP/1.1`, the fields and the blank line that ends them.
    func encoded(allocator: ByteBufferAllocator) -> (bytes: ByteBuffer, isChunked: Bool) {
        let method = self.method.rawValue
        let fields = FieldsMeasure(self.headers)
        let length = method.utf8.count + 1 + self.uri.utf8.count + 11 + fields.length
        var bytes = allocator.buffer(capacity: length)
        bytes.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { memory in
            var out = HeadBytes(memory)
            out.append(method)
            out.append(" ")
            out.append(self.uri)
            out.append(self.version.isHTTP10 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n")
            out.append(fields: self.headers)
            return out.count
        }
        return (bytes, self.version.speaksChunked && fields.declaresChunked)
    }
}

extension ByteBuffer {
    /// Header fields and the blank line that ends them: a chunked message's trailers.
    fileprivate mutating func writeFields(_ fields: HTTPHeaders) {
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: FieldsMeasure(fields).length) { memory in
            var out = HeadBytes(memory)
            out.append(fields: fields)
            return out.count
        }
    }
}

/// What a head's fields take on the wire, and whether they declare a chunked body.
private struct FieldsMeasure {
    /// The bytes of `name: value\r\n` for each field, and the blank line after them.
    private(set) var length = 2
    private(set) var declaresChunked = false

    init(_ fields: HTTPHeaders) {
        var sawTransferEncoding = false
        for (name, value) in fields {
            let nameLength = name.utf8.count
            self.length += nameLength + value.utf8.count + 4
            if nameLength == 17, !sawTransferEncoding, name.equalsASCIICaseInsensitive("transfer-encoding") {
                // The first one decides, as `HTTPHeaders.first(name:)` would.
                sawTransferEncoding = true
                self.declaresChunked = value == "chunked"
            }
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

    /// A status code's digits, written in place rather than made into a `String` first.
    mutating func append(decimal value: UInt) {
        let digits = Self.decimalDigits(value)
        precondition(self.count + digits <= self.capacity, "a head outgrew its measure")
        var rest = value
        for offset in stride(from: digits - 1, through: 0, by: -1) {
            self.start.storeBytes(of: UInt8(ascii: "0") + UInt8(rest % 10), toByteOffset: self.count + offset, as: UInt8.self)
            rest /= 10
        }
        self.count += digits
    }

    static func decimalDigits(_ value: UInt) -> Int {
        var digits = 1
        var rest = value / 10
        while rest > 0 {
            digits += 1
            rest /= 10
        }
        return digits
    }

    private mutating func append(_ bytes: UnsafePointer<UInt8>?, count: Int) {
        guard let bytes, count > 0 else { return }
        precondition(self.count + count <= self.capacity, "a head outgrew its measure")
        (self.start + self.count).copyMemory(from: bytes, byteCount: count)
        self.count += count
    }
}

extension HTTPVersion {
    fileprivate var isHTTP10: Bool { self.major == 1 && self.minor == 0 }
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
            let (bytes, isChunked) = head.encoded(allocator: context.channel.allocator)
            self.isChunked = isChunked
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
