import CNIOLLHTTP
import NIOCore
import NIOHTTP1

/// What an `HTTPParser` found, handed over as it is found.
protocol HTTPParserDelegate: AnyObject {
    func parsedHead(_ head: HTTPParser.Head)
    /// A piece of body: a slice of the bytes parsed, not a copy.
    func parsedBody(_ body: ByteBuffer)
    func parsedEnd(trailers: HTTPHeaders?)
}

/// One side of a connection's HTTP/1 messages, parsed with llhttp called directly.
///
/// The parser is NIO's: llhttp as swift-nio carries it (`CNIOLLHTTP`, pinned with swift-nio in
/// Package.swift), set up as NIO's `HTTPDecoder` sets it up — strict, no lenient flags, the
/// same head limits, the same fixes for responses to `HEAD` and for 1xx, 204 and 304 — and held
/// to it by `HTTPParserTests`, which feeds both the same bytes split every way. What is left out
/// is the machinery around it: `ByteToMessageHandler`'s buffering, its unspecialised generic
/// code, and a trip through the pipeline in `NIOAny` for every part. That machinery cost more
/// instructions per request than everything Breakwater does of its own (README.md,
/// "Benchmarks"). Here the handler that reads the bytes parses them and gets each part by a
/// direct call, and a body is a slice of the bytes read.
///
/// Parsing stops after each message (`Outcome.messageEnded`), so the reader decides what the
/// bytes behind it are: the next pipelined request, or stray bytes from an app that had
/// nothing more to say. It stops for good after a protocol switch (`Outcome.switched`), and
/// keeps what follows for the tunnel (`takeBytesAfterSwitch`); and after a failure, when it
/// drops what follows (`Outcome.dropped`): one answer to a malformed stream is enough.
final class HTTPParser {
    enum Kind {
        case request
        case response
    }

    /// A message's head, as the parser's kind reads it: the head the data path carries on.
    enum Head {
        case request(RequestHead)
        case response(ResponseHead)
    }

    /// Where a call to `parse` stopped.
    enum Outcome: Equatable {
        /// Every byte was taken; the message in progress (if any) continues in the next read.
        case needMoreBytes
        /// A message ended; `rest` is what followed it in these bytes.
        case messageEnded(rest: ByteBuffer?)
        /// A message that switched protocols ended (a request to upgrade, a 101), in these
        /// bytes or before: nothing after it is HTTP. What follows it is kept, for whoever
        /// reads on (`takeBytesAfterSwitch`).
        case switched
        /// The parser failed before: the bytes are dropped.
        case dropped
    }

    /// The head limits: a piece (the target, a field's name, its value) and all of them
    /// together, in bytes; and the number of fields, trailers included. As NIO's
    /// `NIOHTTPDecoderLimitConfiguration` counts them.
    struct Limits {
        var maxPieceBytes: Int
        var maxHeadBytes: Int
        var maxFields: Int

        /// A head of up to `maxHeadBytes` (any piece of it as long), with at most 100 header
        /// fields, as HAProxy (101) and Envoy (100) allow: 5,000 tiny headers fit in
        /// `max_header_bytes` but cost the app (and the proxy's rewriting) far more than their
        /// bytes suggest. More is refused with 431 (a request) or 502 (a response).
        static func proxyLimits(maxHeadBytes: Int) -> Self {
            Self(maxPieceBytes: maxHeadBytes, maxHeadBytes: maxHeadBytes, maxFields: 100)
        }
    }

    unowned(unsafe) var delegate: (any HTTPParserDelegate)?
    let kind: Kind
    private let limits: Limits
    private let parser: UnsafeMutablePointer<llhttp_t>

    // The message in progress. These and the bytes being parsed are touched only by `parse`
    // and `finish` and the llhttp callbacks inside them, which `isParsing` keeps from
    // overlapping (re-entry is a precondition failure): Swift's run-time exclusivity check
    // would cost more here than the parsing, some 90 instructions on each of the dozens of
    // callbacks a message makes. Everywhere else the check stays on.
    @exclusivity(unchecked) private var piece = Piece()
    /// The bytes of the target, or of the field name or value, being read.
    @exclusivity(unchecked) private var pieceBytes = 0
    @exclusivity(unchecked) private var headBytes = 0
    @exclusivity(unchecked) private var fieldCount = 0
    @exclusivity(unchecked) private var uri = ""
    /// The head's fields, or after it the trailers, as they arrive.
    @exclusivity(unchecked) private var fields = HeaderFields.Builder()
    @exclusivity(unchecked) private var headDelivered = false
    /// A 1xx other than 101: the real answer follows, so nothing of it is delivered.
    @exclusivity(unchecked) private var isInformational = false
    /// The response to come answers a `HEAD`: its length fields describe a body it does not have.
    @exclusivity(unchecked) private var answersHEAD = false

    // The bytes being parsed, while `parse` runs: bodies are sliced from them.
    @exclusivity(unchecked) private var input = ByteBuffer()
    @exclusivity(unchecked) private var inputStart = UnsafeRawPointer(bitPattern: 1)!
    @exclusivity(unchecked) private var failure: HTTPParserError?
    private var isParsing = false
    /// What followed a switch of protocols, so far.
    private var bytesAfterSwitch: ByteBuffer?

    init(kind: Kind, limits: Limits) {
        self.kind = kind
        self.limits = limits
        self.parser = .allocate(capacity: 1)
        c_nio_llhttp_init(self.parser, kind == .request ? HTTP_REQUEST : HTTP_RESPONSE, Self.settings)
        self.parser.pointee.data = Unmanaged.passUnretained(self).toOpaque()
    }

    deinit {
        self.parser.deallocate()
    }

    /// Called as a request goes out, before its response can arrive.
    func expectResponse(to method: HTTPMethod) {
        self.answersHEAD = method == .HEAD
    }

    /// A message switched protocols: what follows is not HTTP.
    var hasSwitched: Bool {
        c_nio_llhttp_get_errno(self.parser) == HPE_PAUSED_UPGRADE
    }

    /// What followed the switch of protocols, for the tunnel; nil when nothing did (yet).
    func takeBytesAfterSwitch() -> ByteBuffer? {
        defer { self.bytesAfterSwitch = nil }
        return self.bytesAfterSwitch
    }

    /// Parses `bytes` up to the end of the next message, delivering its parts to `delegate`.
    ///
    /// - Throws: `HTTPParserError` for bytes that are not HTTP/1 within the limits; what
    ///   follows is dropped.
    func parse(_ bytes: ByteBuffer) throws(HTTPParserError) -> Outcome {
        precondition(!self.isParsing, "HTTPParser.parse re-entered from its own delegate")
        switch c_nio_llhttp_get_errno(self.parser) {
        case HPE_OK:
            break
        case HPE_PAUSED:
            c_nio_llhttp_resume(self.parser)
        case HPE_PAUSED_UPGRADE:
            self.bytesAfterSwitch.setOrWriteImmutableBuffer(bytes)
            return .switched
        default:
            return .dropped
        }
        self.isParsing = true
        defer { self.isParsing = false }
        self.input = bytes
        defer { self.input = ByteBuffer() }
        let (errno, stoppedAt) = bytes.withUnsafeReadableBytes { memory -> (llhttp_errno_t, Int) in
            let start = memory.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!
            self.inputStart = start
            let errno = c_nio_llhttp_execute(self.parser, start.assumingMemoryBound(to: CChar.self), memory.count)
            // A head that runs on into the next read is copied out before its bytes go.
            self.piece.copyOut()
            self.fields.keepPieces()
            guard errno == HPE_PAUSED || errno == HPE_PAUSED_UPGRADE, let position = c_nio_llhttp_get_error_pos(self.parser)
            else {
                return (errno, memory.count)
            }
            return (errno, UnsafeRawPointer(position) - start)
        }
        switch errno {
        case HPE_OK:
            return .needMoreBytes
        case HPE_PAUSED:
            return .messageEnded(rest: Self.rest(of: bytes, after: stoppedAt))
        case HPE_PAUSED_UPGRADE:
            self.bytesAfterSwitch = Self.rest(of: bytes, after: stoppedAt)
            return .switched
        default:
            throw self.failure ?? HTTPParserError(errno)
        }
    }

    /// The connection's end, which ends a response framed by it (after a switch or a
    /// failure, it ends nothing).
    ///
    /// - Throws: `HTTPParserError.invalidEOFState` when a message was cut short.
    func finish() throws(HTTPParserError) {
        guard !self.isParsing, c_nio_llhttp_get_errno(self.parser) == HPE_OK else { return }
        self.isParsing = true
        defer { self.isParsing = false }
        let errno = c_nio_llhttp_finish(self.parser)
        guard errno == HPE_OK || errno == HPE_PAUSED else {
            throw self.failure ?? HTTPParserError(errno)
        }
    }

    private static func rest(of bytes: ByteBuffer, after count: Int) -> ByteBuffer? {
        count < bytes.readableBytes ? bytes.getSlice(at: bytes.readerIndex + count, length: bytes.readableBytes - count) : nil
    }

    // MARK: llhttp's callbacks

    /// Calls `callback` on the parser whose llhttp state this is, without retaining it: it
    /// is alive, inside its own `parse`, and a retain and release around each of the dozens of
    /// callbacks a message makes are atomic operations for nothing.
    private static func with(_ parser: UnsafeMutablePointer<llhttp_t>?, _ callback: (HTTPParser) -> Int32) -> Int32 {
        Unmanaged<HTTPParser>.fromOpaque(parser!.pointee.data)._withUnsafeGuaranteedRef(callback)
    }

    /// One set for every parser: llhttp finds its parser's Swift object in `data`. Written
    /// once, as the first parser is made, and only read after (by llhttp, on every loop).
    nonisolated(unsafe) private static let settings: UnsafeMutablePointer<llhttp_settings_t> = {
        let settings = UnsafeMutablePointer<llhttp_settings_t>.allocate(capacity: 1)
        c_nio_llhttp_settings_init(settings)
        settings.pointee.on_message_begin = { HTTPParser.with($0) { $0.messageBegan() } }
        settings.pointee.on_url = { parser, at, length in HTTPParser.with(parser) { $0.receivedTargetPiece(at, length) } }
        settings.pointee.on_url_complete = { HTTPParser.with($0) { $0.uriEnded() } }
        settings.pointee.on_header_field = { parser, at, length in HTTPParser.with(parser) { $0.receivedFieldPiece(at, length) } }
        settings.pointee.on_header_field_complete = { HTTPParser.with($0) { $0.fieldNameEnded() } }
        settings.pointee.on_header_value = { parser, at, length in HTTPParser.with(parser) { $0.receivedFieldPiece(at, length) } }
        settings.pointee.on_header_value_complete = { HTTPParser.with($0) { $0.fieldValueEnded() } }
        settings.pointee.on_headers_complete = { HTTPParser.with($0) { $0.headEnded() } }
        settings.pointee.on_body = { parser, at, length in HTTPParser.with(parser) { $0.receivedBody(at, length) } }
        settings.pointee.on_message_complete = { HTTPParser.with($0) { $0.messageEnded() } }
        return settings
    }()

    private func messageBegan() -> Int32 {
        self.headBytes = 0
        self.fieldCount = 0
        self.headDelivered = false
        self.isInformational = false
        return 0
    }

    private func receivedTargetPiece(_ at: UnsafePointer<CChar>?, _ length: Int) -> Int32 {
        self.piece.append(UnsafeRawPointer(at!), length)
        return self.count(length)
    }

    private func receivedFieldPiece(_ at: UnsafePointer<CChar>?, _ length: Int) -> Int32 {
        self.fields.append(UnsafeRawBufferPointer(start: at, count: length))
        return self.count(length)
    }

    /// Counts a piece's bytes against the head limits.
    private func count(_ length: Int) -> Int32 {
        self.pieceBytes += length
        self.headBytes += length
        if self.pieceBytes > self.limits.maxPieceBytes || self.headBytes > self.limits.maxHeadBytes {
            return self.fail(.headerOverflow)
        }
        return 0
    }

    private func uriEnded() -> Int32 {
        self.pieceBytes = 0
        self.uri = self.piece.take()
        return 0
    }

    private func fieldNameEnded() -> Int32 {
        self.pieceBytes = 0
        self.fieldCount += 1
        if self.fieldCount > self.limits.maxFields {
            return self.fail(.headerOverflow)
        }
        // llhttp takes an empty name; NIO's decoder does not, and neither does this one.
        return self.fields.endName() == 0 ? self.fail(.invalidHeaderToken) : 0
    }

    private func fieldValueEnded() -> Int32 {
        self.pieceBytes = 0
        self.fields.endValue()
        return 0
    }

    /// 0 to read the body as the head frames it, 1 when there is none whatever the head says.
    private func headEnded() -> Int32 {
        let parser = self.parser.pointee
        guard parser.http_major == 1 else {
            return self.fail(.invalidVersion)
        }
        var hasNoBody = false
        let status = Int(parser.status_code)
        if self.kind == .response {
            // As NIO's decoder: llhttp would read a body framed by the length fields of a response
            // to HEAD, or of a 1xx, 204 or 304, none of which has one (RFC 9112 §6.3). An
            // informational answer is not the answer; the request's method waits for the next.
            if status / 100 == 1 && status != 101 {
                self.isInformational = true
                hasNoBody = true
            } else {
                hasNoBody = self.answersHEAD || status / 100 == 1 || status == 204 || status == 304
                self.answersHEAD = false
            }
        }
        let headers = self.fields.build()
        self.headDelivered = true
        if !self.isInformational {
            let version = HTTPVersion(major: Int(parser.http_major), minor: Int(parser.http_minor))
            switch self.kind {
            case .request:
                self.delegate?.parsedHead(.request(RequestHead(version: version, method: HTTPMethod(llhttp: parser.method), uri: self.uri, headers: headers)))
            case .response:
                self.delegate?.parsedHead(.response(ResponseHead(version: version, status: HTTPResponseStatus(statusCode: status), headers: headers)))
            }
        }
        self.uri = ""
        return hasNoBody ? 1 : 0
    }

    private func receivedBody(_ at: UnsafePointer<CChar>?, _ length: Int) -> Int32 {
        let offset = UnsafeRawPointer(at!) - self.inputStart
        self.delegate?.parsedBody(self.input.getSlice(at: self.input.readerIndex + offset, length: length)!)
        return 0
    }

    /// Pauses the parser behind the message, but for a switch, where llhttp stops by itself,
    /// and an informational answer, which the real one follows.
    private func messageEnded() -> Int32 {
        // As NIO's decoder, for https://github.com/nodejs/llhttp/issues/202.
        self.parser.pointee.content_length = 0
        if self.isInformational {
            return 0
        }
        // Trailers are rare: they go on in NIO's type.
        let trailers = self.fields.build()
        self.delegate?.parsedEnd(trailers: trailers.count > 0 ? trailers.httpHeaders : nil)
        return self.parser.pointee.upgrade != 0 ? 0 : Int32(HPE_PAUSED.rawValue)
    }

    private func fail(_ error: HTTPParserError) -> Int32 {
        self.failure = error
        return -1
    }
}

extension HTTPParser {
    /// The request target being read, which comes in more than one callback when it spans
    /// reads. Usually it does not, and is read in place; only a target that runs on into the
    /// next read is copied. (The fields gather in a `HeaderFields.Builder`.)
    private struct Piece {
        private var start: UnsafeRawPointer?
        private var count = 0
        private var kept: [UInt8] = []

        mutating func append(_ at: UnsafeRawPointer, _ length: Int) {
            if self.start == nil && self.kept.isEmpty {
                (self.start, self.count) = (at, length)
            } else {
                self.copyOut()
                self.kept.append(contentsOf: UnsafeRawBufferPointer(start: at, count: length))
            }
        }

        /// Copies the piece out of the bytes being parsed, before they go.
        mutating func copyOut() {
            guard let start = self.start else { return }
            self.kept.append(contentsOf: UnsafeRawBufferPointer(start: start, count: self.count))
            (self.start, self.count) = (nil, 0)
        }

        mutating func take() -> String {
            if let start = self.start {
                let text = String(decoding: UnsafeRawBufferPointer(start: start, count: self.count), as: UTF8.self)
                (self.start, self.count) = (nil, 0)
                return text
            }
            let text = String(decoding: self.kept, as: UTF8.self)
            self.kept.removeAll(keepingCapacity: true)
            return text
        }
    }
}

extension HTTPMethod {
    /// The method llhttp read, as NIO's decoder names it.
    fileprivate init(llhttp code: UInt8) {
        switch llhttp_method_t(UInt32(code)) {
        case HTTP_GET: self = .GET
        case HTTP_POST: self = .POST
        case HTTP_HEAD: self = .HEAD
        case HTTP_PUT: self = .PUT
        case HTTP_DELETE: self = .DELETE
        case HTTP_PATCH: self = .PATCH
        case HTTP_OPTIONS: self = .OPTIONS
        case let other: self = HTTPMethod(rawValue: String(cString: c_nio_llhttp_method_name(other)))
        }
    }
}

extension HTTPParserError {
    /// llhttp's error as NIO's decoder reports it.
    fileprivate init(_ errno: llhttp_errno_t) {
        switch errno {
        case HPE_INTERNAL: self = .invalidInternalState
        case HPE_STRICT: self = .strictModeAssertion
        case HPE_LF_EXPECTED: self = .lfExpected
        case HPE_UNEXPECTED_CONTENT_LENGTH: self = .unexpectedContentLength
        case HPE_CLOSED_CONNECTION: self = .closedConnection
        case HPE_INVALID_METHOD: self = .invalidMethod
        case HPE_INVALID_URL: self = .invalidURL
        case HPE_INVALID_CONSTANT: self = .invalidConstant
        case HPE_INVALID_VERSION: self = .invalidVersion
        case HPE_INVALID_HEADER_TOKEN, HPE_UNEXPECTED_SPACE: self = .invalidHeaderToken
        case HPE_INVALID_CONTENT_LENGTH: self = .invalidContentLength
        case HPE_INVALID_CHUNK_SIZE: self = .invalidChunkSize
        case HPE_INVALID_STATUS: self = .invalidStatus
        case HPE_INVALID_EOF_STATE: self = .invalidEOFState
        default: self = .unknown
        }
    }
}
