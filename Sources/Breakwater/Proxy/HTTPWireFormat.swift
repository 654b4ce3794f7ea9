import NIOCore
import NIOHTTP1

/// An HTTP/1.1 message head as it goes on the wire, and whether the body after it is chunked.
///
/// Heads are written straight into the buffer the socket takes (`HeadWriter`): a proxied head
/// is read once, field by field, and each field kept is copied once, with no `HTTPHeaders` or
/// head in between. NIO's encoders write each of a field's four pieces with its own
/// `writeString`, each paying an exclusivity check and index arithmetic; on a small proxied
/// request that came to a tenth of the proxy's instructions, for the two heads it writes.
struct EncodedHead: Equatable, Sendable {
    private(set) var bytes: ByteBuffer
    /// Its version speaks chunked and its first `Transfer-Encoding` says `chunked` (as
    /// `HeaderRewriting` sets it per hop): learned as the fields are written.
    let isChunked: Bool

    /// The head `write` writes; see `HeadWriter.written` for what `write` must promise.
    init(allocator: ByteBufferAllocator, expectedLength: Int = HeadWriter.expectedLength, _ write: (inout HeadWriter) -> Void) {
        (self.bytes, self.isChunked) = HeadWriter.written(allocator: allocator, expectedLength: expectedLength, write)
    }

    /// Appends the first piece of a body framed by length when it fits in the room the head's
    /// buffer already has: a small answer then goes out as one buffer, one write through NIO's
    /// pipeline instead of two, and nothing is allocated for it.
    ///
    /// - Returns: whether `body` was appended (if not, it goes out on its own, after the head).
    mutating func appendBody(ifItFits body: ByteBuffer) -> Bool {
        guard !self.isChunked, body.readableBytes <= self.bytes.writableBytes else { return false }
        var body = body
        self.bytes.writeBuffer(&body)
        return true
    }
}

/// Writes the text of a head into memory measured out for it, measuring as it goes.
///
/// A head's length is known only once its fields have been chosen, and choosing them is most
/// of the work: so it is written into a buffer of a typical head's size while it is measured,
/// and a head that outgrows the buffer is written once more at its measured size. That costs a
/// second pass only for heads larger than `expectedLength`, where measuring first would cost
/// one for every head.
struct HeadWriter {
    /// A typical proxied head is 150 to 600 bytes.
    static let expectedLength = 1024

    private let memory: UnsafeMutableRawBufferPointer
    /// The bytes written, or that would have been: past the end of `memory` nothing is copied.
    private var count = 0
    private var speaksChunked = false
    private var sawTransferEncoding = false
    private var declaresChunked = false

    private init(_ memory: UnsafeMutableRawBufferPointer) {
        self.memory = memory
    }

    /// The bytes `write` writes, and whether they declare a chunked body.
    ///
    /// `write` must write the same bytes each time it is called: a head that outgrows
    /// `expectedLength` is written twice.
    static func written(
        allocator: ByteBufferAllocator,
        expectedLength: Int = Self.expectedLength,
        _ write: (inout HeadWriter) -> Void
    ) -> (bytes: ByteBuffer, isChunked: Bool) {
        var bytes = allocator.buffer(capacity: expectedLength)
        var measured = 0
        var isChunked = false
        var length = expectedLength
        repeat {
            // One call site for `write`, so the compiler inlines it once.
            bytes.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { memory in
                var writer = HeadWriter(memory)
                write(&writer)
                measured = writer.count
                isChunked = writer.speaksChunked && writer.declaresChunked
                return writer.count <= memory.count ? writer.count : 0
            }
            length = measured
        } while measured > bytes.readableBytes
        return (bytes, isChunked)
    }

    /// `HTTP/1.1 200 OK`.
    mutating func statusLine(version: HTTPVersion, status: HTTPResponseStatus) {
        self.speaksChunked = version.speaksChunked
        self.append(version.isHTTP10 ? "HTTP/1.0 " : "HTTP/1.1 ")
        self.append(decimal: status.code)
        self.append(" ")
        self.append(status.reasonPhrase)
        self.append("\r\n")
    }

    /// `GET /path HTTP/1.1`.
    mutating func requestLine(method: HTTPMethod, target: some HeadText, version: HTTPVersion) {
        self.speaksChunked = version.speaksChunked
        self.append(method.rawValue)
        self.append(" ")
        self.append(target)
        self.append(version.isHTTP10 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n")
    }

    /// `name: value`. The names are either the proxy's own literals or came through the
    /// parser, which holds them to RFC 9110's token characters, and values through the parser
    /// too, which refuses line breaks in them: so they are copied as they are.
    mutating func field(_ name: some HeadText, _ value: some HeadText) {
        name.withHeadBytes { name in
            value.withHeadBytes { value in
                self.field(FieldBytes(name), FieldBytes(value))
            }
        }
    }

    mutating func field(_ name: FieldBytes, _ value: FieldBytes) {
        if !self.sawTransferEncoding, name.equalsASCIICaseInsensitive("transfer-encoding") {
            // The first one decides, as `HTTPHeaders.first(name:)` would.
            self.sawTransferEncoding = true
            self.declaresChunked = value.bytes.elementsEqual("chunked".utf8)
        }
        self.append(name.bytes)
        self.append(": ")
        self.append(value.bytes)
        self.append("\r\n")
    }

    /// `name: 1234`, the digits written in place rather than made into a `String` first.
    /// `value` is a length or a number of seconds, never negative.
    mutating func field(_ name: String, decimal value: Int) {
        self.append(name)
        self.append(": ")
        precondition(value >= 0, "a negative length")
        self.append(decimal: UInt(value))
        self.append("\r\n")
    }

    /// The blank line that ends a head.
    mutating func endHead() {
        self.append("\r\n")
    }

    mutating func append(_ text: StaticString) {
        self.append(UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    mutating func append(_ text: some HeadText) {
        text.withHeadBytes { self.append($0) }
    }

    mutating func append(decimal value: UInt) {
        var digits = 1
        var rest = value / 10
        while rest > 0 {
            digits += 1
            rest /= 10
        }
        if self.count + digits <= self.memory.count {
            rest = value
            for offset in stride(from: digits - 1, through: 0, by: -1) {
                self.memory[self.count + offset] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
            }
        }
        self.count += digits
    }

    private mutating func append(_ bytes: UnsafeRawBufferPointer) {
        if self.count + bytes.count <= self.memory.count {
            UnsafeMutableRawBufferPointer(rebasing: self.memory[self.count...]).copyMemory(from: bytes)
        }
        self.count += bytes.count
    }
}

extension HTTPVersion {
    fileprivate var isHTTP10: Bool { self.major == 1 && self.minor == 0 }
}

/// What a head is written from: the proxy's own strings, or fields in place.
protocol HeadText {
    func withHeadBytes<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result
}

extension FieldBytes: HeadText {
    func withHeadBytes<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        body(self.bytes)
    }
}

extension StringProtocol {
    func withHeadBytes<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        if let result = self.utf8.withContiguousStorageIfAvailable({ body(UnsafeRawBufferPointer($0)) }) {
            return result
        }
        var text = String(self)  // a bridged string: made native, once, to be read in place
        return text.withUTF8 { body(UnsafeRawBufferPointer($0)) }
    }
}

extension String: HeadText {}
extension Substring: HeadText {}

/// A part of a message on its way out: the head already bytes, the body as it comes.
typealias OutgoingHTTPPart = HTTPPart<EncodedHead, IOData>

/// Writes one direction's HTTP/1.1 messages as bytes, in place of NIO's encoders: the head in
/// one pass, the body as it comes, passed on as it is or framed as chunks when the head said
/// `Transfer-Encoding: chunked` (RFC 9112 §7.1). Framing headers are the exchange's business
/// (`HeaderRewriting` declares them per hop); this only follows them.
///
/// A value its owner writes through, from the owner's channel context: `DownstreamHandler` for
/// the answers to a client, `UpstreamHandler` for the requests to the app.
struct HTTPMessageEncoder {
    private var isChunked = false

    /// Returns whether anything was written: the end of a length-framed body writes nothing
    /// (unless a promise waits on it), and its owner need not flush for it.
    @discardableResult
    mutating func write(_ part: OutgoingHTTPPart, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) -> Bool {
        switch part {
        case .head(let head):
            self.isChunked = head.isChunked
            context.write(NIOAny(IOData.byteBuffer(head.bytes)), promise: promise)
            return true
        case .body(let body):
            self.write(body, context: context, promise: promise)
            return true
        case .end(let trailers):
            return self.end(trailers: trailers, context: context, promise: promise)
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

    private mutating func end(trailers: HTTPHeaders?, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) -> Bool {
        defer { self.isChunked = false }
        if self.isChunked {
            let last = HeadWriter.written(allocator: context.channel.allocator, expectedLength: 64) { out in
                out.append("0\r\n")
                for (name, value) in trailers ?? [:] {
                    out.field(name, value)
                }
                out.endHead()
            }
            context.write(NIOAny(IOData.byteBuffer(last.bytes)), promise: promise)
            return true
        } else if let promise {
            // Nothing to write (a length-framed body ends by itself), but the promise must
            // complete in order with the bytes before it.
            context.write(NIOAny(IOData.byteBuffer(context.channel.allocator.buffer(capacity: 0))), promise: promise)
            return true
        }
        return false
    }
}
