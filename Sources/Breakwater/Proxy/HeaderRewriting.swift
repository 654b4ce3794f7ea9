import NIOCore
import NIOHTTP1

/// The header duties of an HTTP/1.1 intermediary (RFC 9110 §7.6): hop-by-hop headers stay on
/// their hop, the forwarding headers say who asked, and framing is declared anew per hop.
enum HeaderRewriting {
    /// The request head sent to the app, written in one pass over the client's headers.
    ///
    /// - Parameters:
    ///   - clientAddress: the peer's IP, appended to `X-Forwarded-For`.
    ///   - isUpgrade: keep `Upgrade` and ask for it with `Connection: upgrade` (WebSocket).
    ///   - trace: the request's id and trace context, which replace the client's.
    static func upstreamRequest(
        _ head: HTTPRequestHead,
        framing: MessageFraming,
        clientAddress: String?,
        isUpgrade: Bool,
        trace: RequestTrace,
        traceConfiguration: TraceConfig,
        allocator: ByteBufferAllocator
    ) -> EncodedHead {
        let nominated = nominatedHeaders(head.headers, keepingUpgrade: isUpgrade)
        // Unwrapped here, once: the writing below reads them for every field.
        let absolute = absoluteForm(head.uri)
        let (replacesHost, authority, target) = (absolute != nil, absolute?.authority ?? "", absolute?.target ?? head.uri)
        let (forwardsClient, client) = (clientAddress != nil, clientAddress ?? "")
        return EncodedHead(allocator: allocator) { out in
            out.requestLine(method: head.method, target: target, version: .http1_1)
            // The client's X-Forwarded-For goes on as one field, the client's address last.
            var forwardedForLines = 0
            var forwardedFor = ""
            var hasForwardedProto = false
            for (name, value) in head.headers {
                if isHopByHop(name, keepingUpgrade: isUpgrade) || nominated.contains(lowercasedASCII: name)
                    || trace.replaces(name, configuration: traceConfiguration)
                {
                    continue
                }
                if replacesHost, name.equalsASCIICaseInsensitive("host") {
                    // RFC 9112 §3.2.2: the target's authority wins, and a proxy must send it as
                    // Host, or the app could route by one name while the proxy routed by the other.
                    out.field(name, authority)
                    continue
                }
                if name.equalsASCIICaseInsensitive("x-forwarded-for") {
                    forwardedForLines += 1
                    if forwardedForLines == 1 { forwardedFor = value }
                    continue
                }
                if name.equalsASCIICaseInsensitive("expect") {
                    // The proxy answers `100-continue` itself when it starts reading the body,
                    // so the app never waits for a continue that nobody will send.
                    continue
                }
                if name.equalsASCIICaseInsensitive("x-forwarded-proto") {
                    hasForwardedProto = true
                }
                out.field(name, value)
            }
            if forwardedForLines > 0 || forwardsClient {
                out.append("x-forwarded-for: ")
                if forwardedForLines > 1 {
                    // Rare enough to walk the fields again rather than collect them every time.
                    for (index, (_, value)) in head.headers.filter({ $0.name.equalsASCIICaseInsensitive("x-forwarded-for") }).enumerated() {
                        if index > 0 { out.append(", ") }
                        out.append(value)
                    }
                } else {
                    out.append(forwardedFor)
                }
                if forwardsClient {
                    if forwardedForLines > 0 { out.append(", ") }
                    out.append(client)
                }
                out.append("\r\n")
            }
            if !hasForwardedProto {
                // Kept when present: behind Fly's edge (or any TLS terminator) the client's
                // scheme is already recorded there, and overwriting it with "http" would break
                // the app's URLs.
                out.field("x-forwarded-proto", "http")
            }
            trace.write(to: &out, configuration: traceConfiguration)
            if isUpgrade {
                out.field("connection", "upgrade")
            }
            switch framing {
            case .chunked: out.field("transfer-encoding", "chunked")
            case .contentLength(let length): out.field("content-length", decimal: length)
            case .noBody, .untilClose: break
            }
            out.endHead()
        }
    }

    /// An absolute-form target (`GET http://host/path?q`) as the authority it names and the
    /// origin-form target (`/path?q`) an app expects; nil for any other form.
    static func absoluteForm(_ uri: String) -> (authority: Substring, target: String)? {
        guard !uri.hasPrefix("/"), let scheme = uri.firstRange(of: "://") else { return nil }
        let afterScheme = uri[scheme.upperBound...]
        let end = afterScheme.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? afterScheme.endIndex
        var authority = afterScheme[..<end]
        if let at = authority.lastIndex(of: "@") {
            authority = authority[authority.index(after: at)...]  // userinfo is never sent on
        }
        let rest = afterScheme[end...]
        return (authority, rest.hasPrefix("/") ? String(rest) : "/" + rest)
    }

    /// The response head sent to the client, written in one pass over the app's headers.
    ///
    /// - Parameter requestID: the request id header, which replaces any the app sent.
    static func clientResponse(
        _ head: HTTPResponseHead,
        framing: MessageFraming,
        clientVersion: HTTPVersion,
        keepAlive: Bool,
        requestID: (name: String, value: String),
        allocator: ByteBufferAllocator
    ) -> EncodedHead {
        let isUpgrade = head.status == .switchingProtocols
        let nominated = nominatedHeaders(head.headers, keepingUpgrade: isUpgrade)
        return EncodedHead(allocator: allocator) { out in
            out.statusLine(version: clientVersion, status: head.status)
            // HEAD and 304 may announce the length of the body they do not carry.
            var announcedLength: String?
            for (name, value) in head.headers {
                if isHopByHop(name, keepingUpgrade: isUpgrade) || nominated.contains(lowercasedASCII: name)
                    || name.equalsASCIICaseInsensitive(requestID.name)
                {
                    if announcedLength == nil, name.utf8.count == 14, name.equalsASCIICaseInsensitive("content-length") {
                        announcedLength = value
                    }
                    continue
                }
                out.field(name, value)
            }
            out.field(requestID.name, requestID.value)
            switch framing {
            case .chunked where clientVersion.speaksChunked, .untilClose where clientVersion.speaksChunked:
                out.field("transfer-encoding", "chunked")
            case .contentLength(let length):
                out.field("content-length", decimal: length)
            case .noBody where head.status.mayCarryContentLength:
                if let announcedLength {
                    out.field("content-length", announcedLength)
                }
            case .chunked, .untilClose, .noBody:
                break  // an HTTP/1.0 client reads until close; 1xx and 204 never announce a length
            }
            if isUpgrade {
                out.field("connection", "upgrade")
            } else if !keepAlive {
                out.field("connection", "close")
            } else if clientVersion.minor == 0 {
                out.field("connection", "keep-alive")
            }
            out.endHead()
        }
    }

    /// RFC 9112 §3.2: exactly one `Host`, and an HTTP/1.1 request must have it.
    static func hasValidHost(_ head: HTTPRequestHead) -> Bool {
        var hosts = 0
        for (name, _) in head.headers where name.utf8.count == 4 && name.equalsASCIICaseInsensitive("host") {
            hosts += 1
        }
        return hosts == 1 || (hosts == 0 && !head.version.speaksChunked)
    }

    /// Whether a request asks to switch protocols (WebSocket): `Upgrade` named in `Connection`.
    static func isUpgradeRequest(_ head: HTTPRequestHead) -> Bool {
        head.headers.contains(name: "upgrade")
            && nominatedHeaders(head.headers, keepingUpgrade: false).contains(lowercasedASCII: "upgrade")
    }

    private static func isHopByHop(_ name: String, keepingUpgrade: Bool) -> Bool {
        switch name.utf8.count {
        case 2: return name.equalsASCIICaseInsensitive("te")
        case 7: return name.equalsASCIICaseInsensitive("trailer") || (!keepingUpgrade && name.equalsASCIICaseInsensitive("upgrade"))
        case 10: return name.equalsASCIICaseInsensitive("connection") || name.equalsASCIICaseInsensitive("keep-alive")
        case 14: return name.equalsASCIICaseInsensitive("content-length")  // framing is set per hop
        case 16: return name.equalsASCIICaseInsensitive("proxy-connection")
        case 17: return name.equalsASCIICaseInsensitive("transfer-encoding")
        default: return false
        }
    }

    /// Header names listed in `Connection`, which are hop-by-hop for this message; `Upgrade`
    /// survives when the message switches protocols, since the next hop needs it too.
    ///
    /// Nearly every message says only `keep-alive` or `close`, which name nothing: then nothing
    /// is allocated.
    private static func nominatedHeaders(_ headers: HTTPHeaders, keepingUpgrade: Bool) -> [Substring] {
        var names: [Substring] = []
        let isBlank = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        for (name, value) in headers where name.utf8.count == 10 && name.equalsASCIICaseInsensitive("connection") {
            if value.equalsASCIICaseInsensitive("keep-alive") || value.equalsASCIICaseInsensitive("close") {
                continue  // what nearly every message says
            }
            // Walked as bytes: commas and blanks are ASCII, so every index found is a valid
            // boundary to slice `value` at.
            let bytes = value.utf8
            var start = bytes.startIndex
            while start < bytes.endIndex {
                let comma = bytes[start...].firstIndex(of: UInt8(ascii: ",")) ?? bytes.endIndex
                if let first = bytes[start..<comma].firstIndex(where: { !isBlank($0) }),
                    let last = bytes[start..<comma].lastIndex(where: { !isBlank($0) })
                {
                    let token = value[first..<bytes.index(after: last)]
                    let isKept = token.equalsASCIICaseInsensitive("close") || token.equalsASCIICaseInsensitive("keep-alive")
                        || (keepingUpgrade && token.equalsASCIICaseInsensitive("upgrade"))
                    if !isKept {
                        names.append(token)
                    }
                }
                start = comma == bytes.endIndex ? comma : bytes.index(after: comma)
            }
        }
        return names
    }
}

extension [Substring] {
    fileprivate func contains(lowercasedASCII name: String) -> Bool {
        self.contains { $0.equalsASCIICaseInsensitive(name) }
    }
}

extension StringProtocol {
    /// ASCII-only case-insensitive comparison without allocating lowercased copies.
    ///
    /// Header names and values are native UTF-8 strings, so the bytes are compared in place;
    /// walking two `UTF8View`s index by index costs several times as much, on every header of
    /// every message.
    func equalsASCIICaseInsensitive(_ other: some StringProtocol) -> Bool {
        guard self.utf8.count == other.utf8.count else { return false }
        let inPlace = self.utf8.withContiguousStorageIfAvailable { mine in
            other.utf8.withContiguousStorageIfAvailable { theirs in
                for index in mine.indices where mine[index] != theirs[index] {
                    if mine[index].lowercasedASCII != theirs[index].lowercasedASCII { return false }
                }
                return true
            }
        }
        if let inPlace = inPlace ?? nil { return inPlace }
        return zip(self.utf8, other.utf8).allSatisfy { $0 == $1 || $0.lowercasedASCII == $1.lowercasedASCII }
    }
}

extension UInt8 {
    fileprivate var lowercasedASCII: UInt8 { self &- UInt8(ascii: "A") < 26 ? self | 0x20 : self }
}

extension HTTPResponseStatus {
    /// RFC 9110 §8.6: 1xx and 204 responses never carry Content-Length.
    fileprivate var mayCarryContentLength: Bool { self.code >= 200 && self.code != 204 }
}

extension HTTPVersion {
    /// HTTP/1.1 and later understand chunked bodies and keep connections alive by default.
    var speaksChunked: Bool { self.major > 1 || (self.major == 1 && self.minor >= 1) }
}

extension HTTPMethod {
    /// RFC 9110 §9.2.2: sending these twice has the effect of sending them once.
    var isIdempotent: Bool {
        switch self {
        case .GET, .HEAD, .OPTIONS, .PUT, .DELETE, .TRACE: true
        default: false
        }
    }
}
