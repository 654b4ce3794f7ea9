import NIOHTTP1

/// What the proxy needs to know of a message's header fields, learned in one pass over them.
///
/// Passes over `HTTPHeaders` retained and released every name and value they visited, and those
/// atomic operations cost more than the comparisons: a request used to be walked seven times
/// (framing, `Host`, `Upgrade`, `Expect`, the trace, `Connection`, the rewrite) and a response
/// three. Now each message is surveyed once when its head arrives and walked once more when
/// its head is written (`HeaderRewriting`). A survey is read where it is made: the exchange
/// keeps only the facts it needs later, not the strings.
struct MessageFields {
    /// `Host` fields: RFC 9112 §3.2 wants exactly one in an HTTP/1.1 request.
    let hostCount: Int
    /// A `Transfer-Encoding` is present: the parser accepts one only with a final `chunked`.
    let declaresChunked: Bool
    /// The `Transfer-Encoding` says more than a single `chunked` (`gzip, chunked`). The proxy frames
    /// each body anew for the next hop, so it would drop the other coding and hand on bytes the
    /// reader cannot decode: such a message is refused (as nginx does), a request with 400 and a
    /// response with 502.
    let hasOtherTransferCoding: Bool
    /// The `Content-Length`, blanks after it trimmed: they are not part of the value
    /// (RFC 9110 §5.5), and llhttp passes them on. The parser refuses conflicting lengths
    /// and non-numbers.
    let contentLength: Int?
    /// A `Content-Length` past `Int.max`, which the parser accepts (it reads 64 unsigned
    /// bits). Nobody sends such a body; sent on without its length, what follows would be
    /// read as the next message.
    let hasUnreadableLength: Bool
    /// The names `Connection` lists, bar `close` and `keep-alive`: hop-by-hop for this message.
    /// Nearly every message lists nothing else, and then nothing is allocated.
    let nominated: [String]
    /// `Connection` said `close`, or `keep-alive` more than once; and `keep-alive` once.
    private let saysClose: Bool
    private let saysKeepAlive: Bool
    let hasUpgrade: Bool
    /// `Expect: 100-continue`, which the proxy answers itself.
    let expectsContinue: Bool
    /// The client's request id (the header `requestIDHeader` names), the first; its
    /// `traceparent`, blanks trimmed, or empty when it came more than once (which W3C Trace
    /// Context's test suite answers with a new trace); and its `tracestate`, every line of it.
    let requestID: String?
    let traceparent: String?
    let tracestate: String?

    /// - Parameter requestIDHeader: the request id's header, for a request; nil for a response.
    init(_ headers: HeaderFields, requestIDHeader: String? = nil) {
        // Gathered in locals and stored once: filling `self` field by field in the loop made
        // the compiler copy the whole survey, strings and all.
        var hostCount = 0
        var declaresChunked = false
        var hasOtherTransferCoding = false
        var contentLength: Int?
        var hasUnreadableLength = false
        var nominated: [String] = []
        var (closes, keepAlives) = (false, 0)
        var hasUpgrade = false
        var expectsContinue = false
        var requestID: String?
        var traceparent: String?
        var tracestate: String?
        headers.withFields { fields in
            for (name, value) in fields {
                if let requestIDHeader, requestID == nil, name.equalsASCIICaseInsensitive(requestIDHeader) {
                    requestID = value.string
                    continue
                }
                switch FieldName(name) {
                case .host:
                    hostCount += 1
                case .transferEncoding:
                    hasOtherTransferCoding = hasOtherTransferCoding || declaresChunked || !value.trimmed.equalsASCIICaseInsensitive("chunked")
                    declaresChunked = true
                case .contentLength where contentLength == nil:
                    contentLength = value.trimmed.decimal
                    hasUnreadableLength = contentLength == nil
                case .connection:
                    // What nearly every message says, with no list to split.
                    if value.equalsASCIICaseInsensitive("keep-alive") {
                        keepAlives += 1
                    } else if value.equalsASCIICaseInsensitive("close") {
                        closes = true
                    } else {
                        for token in Self.tokens(of: value) {
                            if token.equalsASCIICaseInsensitive("close") {
                                closes = true
                            } else if token.equalsASCIICaseInsensitive("keep-alive") {
                                keepAlives += 1
                            } else {
                                nominated.append(token.string)
                            }
                        }
                    }
                case .upgrade:
                    hasUpgrade = true
                case .expect:
                    expectsContinue = expectsContinue || Self.tokens(of: value).contains { $0.equalsASCIICaseInsensitive("100-continue") }
                case .traceparent:
                    traceparent = traceparent == nil ? value.trimmed.string : ""
                case .tracestate:
                    // One list, however many lines carry it (RFC 9110 §5.3; W3C Trace Context).
                    tracestate = tracestate.map { "\($0),\(value.string)" } ?? value.string
                default:
                    continue
                }
            }
        }
        (self.hostCount, self.declaresChunked, self.contentLength, self.nominated) = (hostCount, declaresChunked, contentLength, nominated)
        (self.hasOtherTransferCoding, self.hasUnreadableLength) = (hasOtherTransferCoding, hasUnreadableLength)
        (self.hasUpgrade, self.expectsContinue) = (hasUpgrade, expectsContinue)
        (self.saysClose, self.saysKeepAlive) = (closes || keepAlives > 1, keepAlives == 1)
        (self.requestID, self.traceparent, self.tracestate) = (requestID, traceparent, tracestate)
    }

    /// Whether the connection carries another message after this one, as NIO's
    /// `HTTPHeaders.isKeepAlive` reads `Connection` (a `close`, or `keep-alive` twice, closes;
    /// HTTP/1.1 keeps alive unless told otherwise, HTTP/1.0 only when told to). Asked of a
    /// head made by `HTTPParser`, NIO's own reading would split and lowercase every
    /// `Connection` field again: llhttp's verdict cannot be handed to it.
    func keepsAlive(version: HTTPVersion) -> Bool {
        !self.saysClose && (self.saysKeepAlive || (version.major == 1 && version.minor >= 1))
    }

    /// How the body is delimited, when the fields say: `chunked` when a `Transfer-Encoding`
    /// is present, else the first `Content-Length`; nil when they declare neither.
    var declaredFraming: MessageFraming? {
        if self.declaresChunked { return .chunked }
        return self.contentLength.map(MessageFraming.contentLength)
    }

    /// RFC 9112 §3.2: exactly one `Host`, and an HTTP/1.1 request must have it.
    func hasValidHost(version: HTTPVersion) -> Bool {
        self.hostCount == 1 || (self.hostCount == 0 && !version.speaksChunked)
    }

    /// The framing cannot be carried to the next hop as it was read: a transfer coding the
    /// proxy would drop, a length it cannot hold, or a `Transfer-Encoding` in HTTP/1.0, which
    /// has none (RFC 9112 §6.1: the framing is faulty). A request is answered 400, a response
    /// 502.
    func hasUnforwardableFraming(version: HTTPVersion) -> Bool {
        self.hasOtherTransferCoding || self.hasUnreadableLength || (self.declaresChunked && !version.speaksChunked)
    }

    /// A request the proxy can pass on as it was read: a valid `Host` (two, or none in HTTP/1.1,
    /// and the app and the proxy could read it differently) and a framing it can forward.
    /// Else it is answered 400.
    func isForwardable(version: HTTPVersion) -> Bool {
        self.hasValidHost(version: version) && !self.hasUnforwardableFraming(version: version)
    }

    /// The message asks to switch protocols (WebSocket): an `Upgrade` field that `Connection`
    /// names.
    var requestsUpgrade: Bool {
        self.hasUpgrade && self.nominated.contains { $0.equalsASCIICaseInsensitive("upgrade") }
    }

    /// The comma-separated tokens of a list field, blanks trimmed, empty ones skipped
    /// (RFC 9110 §5.6.1), in place.
    private static func tokens(of value: FieldBytes) -> [FieldBytes] {
        let bytes = value.bytes
        var tokens: [FieldBytes] = []
        var start = 0
        while start < bytes.count {
            let comma = bytes[start...].firstIndex(of: UInt8(ascii: ",")) ?? bytes.count
            let token = FieldBytes(UnsafeRawBufferPointer(rebasing: bytes[start..<comma])).trimmed
            if token.count > 0 {
                tokens.append(token)
            }
            start = comma + 1
        }
        return tokens
    }
}

extension [String] {
    /// Whether `Connection`'s names (`MessageFields.nominated`) made the field `name`
    /// hop-by-hop. `Upgrade` survives a message that switches protocols, since the next hop
    /// needs it too.
    func nominates(_ name: FieldBytes, keepingUpgrade: Bool) -> Bool {
        guard !self.isEmpty else { return false }
        if keepingUpgrade && name.equalsASCIICaseInsensitive("upgrade") { return false }
        return self.contains { name.equalsASCIICaseInsensitive($0) }
    }
}

/// A header field's name, as far as the proxy has business with it.
///
/// Told from the name's bytes with one look at its length and at most one comparison, where
/// asking each question of a name in turn compared it up to eight times.
enum FieldName {
    case host
    case contentLength
    case transferEncoding
    case connection
    case keepAlive
    case proxyConnection
    case te
    case trailer
    case upgrade
    case expect
    case xForwardedFor
    case xForwardedProto
    case traceparent
    case tracestate
    case other

    init(_ name: String) {
        self = name.utf8.withContiguousStorageIfAvailable { Self(bytes: $0) }
            ?? Array(name.utf8).withUnsafeBufferPointer { Self(bytes: $0) }
    }

    init(_ name: FieldBytes) {
        self.init(bytes: name.bytes.assumingMemoryBound(to: UInt8.self))
    }

    private init(bytes name: UnsafeBufferPointer<UInt8>) {
        func `is`(_ known: StaticString, _ field: FieldName) -> FieldName {
            // `known` is lowercase; only letters are folded, so no other byte can match one.
            let known = UnsafeBufferPointer(start: known.utf8Start, count: known.utf8CodeUnitCount)
            for index in name.indices where name[index] != known[index] {
                if name[index] &- UInt8(ascii: "A") >= 26 || name[index] | 0x20 != known[index] { return .other }
            }
            return field
        }
        switch name.count {
        case 2: self = `is`("te", .te)
        case 4: self = `is`("host", .host)
        case 6: self = `is`("expect", .expect)
        case 7: self = name[0] | 0x20 == UInt8(ascii: "t") ? `is`("trailer", .trailer) : `is`("upgrade", .upgrade)
        case 10:
            switch name[0] | 0x20 {
            case UInt8(ascii: "c"): self = `is`("connection", .connection)
            case UInt8(ascii: "k"): self = `is`("keep-alive", .keepAlive)
            default: self = `is`("tracestate", .tracestate)
            }
        case 11: self = `is`("traceparent", .traceparent)
        case 14: self = `is`("content-length", .contentLength)
        case 15: self = `is`("x-forwarded-for", .xForwardedFor)
        case 16: self = `is`("proxy-connection", .proxyConnection)
        case 17: self = name[0] | 0x20 == UInt8(ascii: "t") ? `is`("transfer-encoding", .transferEncoding) : `is`("x-forwarded-proto", .xForwardedProto)
        default: self = .other
        }
    }

    /// RFC 9110 §7.6.1: fields that stay on their hop. `Content-Length` and
    /// `Transfer-Encoding` too, since the proxy declares framing per hop.
    func isHopByHop(keepingUpgrade: Bool) -> Bool {
        switch self {
        case .te, .trailer, .connection, .keepAlive, .proxyConnection, .contentLength, .transferEncoding: true
        case .upgrade: !keepingUpgrade
        default: false
        }
    }
}
