import NIOCore
import NIOHTTP1

/// The header duties of an HTTP/1.1 intermediary (RFC 9110 §7.6): hop-by-hop headers stay on
/// their hop, the forwarding headers say who asked, and framing is declared anew per hop.
enum HeaderRewriting {
    /// The request head sent to the app, written in one pass over the client's headers.
    ///
    /// - Parameters:
    ///   - nominated: the names the client's `Connection` listed (`MessageFields.nominated`).
    ///   - clientAddress: the peer's IP, appended to `X-Forwarded-For`.
    ///   - isUpgrade: keep `Upgrade` and ask for it with `Connection: upgrade` (WebSocket).
    ///   - trace: the request's id and trace context, which replace the client's.
    ///   - app: where the request goes; its address is the `Host` of a request that has none
    ///     (HTTP/1.0 allows that, the request goes on as HTTP/1.1, and some apps refuse it).
    static func upstreamRequest(
        _ head: RequestHead,
        app: UpstreamAddress,
        nominated: [String],
        framing: MessageFraming,
        clientAddress: String?,
        isUpgrade: Bool,
        trace: RequestTrace,
        traceConfiguration: TraceConfig,
        allocator: ByteBufferAllocator
    ) -> EncodedHead {
        // Unwrapped here, once: the writing below reads them for every field.
        let absolute = absoluteForm(head.uri)
        let (replacesHost, authority, target) = (absolute != nil, absolute?.authority ?? "", absolute?.target ?? head.uri)
        let (forwardsClient, client) = (clientAddress != nil, clientAddress ?? "")
        let requestIDHeader = traceConfiguration.requestIDHeader
        let replacesTraceContext = trace.replacesTraceContext
        return head.headers.withFields { fields in EncodedHead(allocator: allocator) { out in
            out.requestLine(method: head.method, target: target, version: .http1_1)
            // The client's X-Forwarded-For goes on as one field, the client's address last.
            var forwardedForLines = 0
            var forwardedFor: FieldBytes?
            var hasForwardedProto = false
            var hasHost = false
            for (name, value) in fields {
                if name.equalsASCIICaseInsensitive(requestIDHeader) {
                    continue  // the trace's id replaces it
                }
                let known = FieldName(name)
                if known.isHopByHop(keepingUpgrade: isUpgrade) || nominated.nominates(name, keepingUpgrade: isUpgrade) {
                    continue
                }
                switch known {
                case .traceparent where replacesTraceContext, .tracestate where replacesTraceContext:
                    continue
                case .host where replacesHost:
                    // RFC 9112 §3.2.2: the target's authority wins, and a proxy must send it as
                    // Host, or the app could route by one name while the proxy routed by the other.
                    hasHost = true
                    out.field(name, authority)
                    continue
                case .host:
                    hasHost = true
                case .xForwardedFor:
                    forwardedForLines += 1
                    if forwardedForLines == 1 { forwardedFor = value }
                    continue
                case .expect:
                    // The proxy answers `100-continue` itself when it starts reading the body,
                    // so the app never waits for a continue that nobody will send.
                    continue
                case .xForwardedProto:
                    hasForwardedProto = true
                default:
                    break
                }
                out.field(name, value)
            }
            if !hasHost {
                out.field("host", replacesHost ? authority : Substring(app.hostField))
            }
            if forwardedForLines > 0 || forwardsClient {
                out.append("x-forwarded-for: ")
                if forwardedForLines > 1 {
                    // Rare enough to walk the fields again rather than collect them every time.
                    for (index, (_, value)) in fields.filter({ FieldName($0.name) == .xForwardedFor }).enumerated() {
                        if index > 0 { out.append(", ") }
                        out.append(value)
                    }
                } else if let forwardedFor {
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
        } }
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
    /// - Parameters:
    ///   - fields: what the app's fields said (`MessageFields(head.headers)`).
    ///   - requestID: the request id header, which replaces any the app sent.
    static func clientResponse(
        _ head: ResponseHead,
        fields: MessageFields,
        framing: MessageFraming,
        clientVersion: HTTPVersion,
        keepAlive: Bool,
        requestID: (name: String, value: String),
        allocator: ByteBufferAllocator
    ) -> EncodedHead {
        let isUpgrade = head.status == .switchingProtocols
        // Read out here: the writing below captures these rather than a copy of the survey.
        let (nominated, announcedLength) = (fields.nominated, fields.contentLength)
        return head.headers.withFields { fields in EncodedHead(allocator: allocator) { out in
            out.statusLine(version: clientVersion, status: head.status)
            for (name, value) in fields {
                if FieldName(name).isHopByHop(keepingUpgrade: isUpgrade) || nominated.nominates(name, keepingUpgrade: isUpgrade)
                    || name.equalsASCIICaseInsensitive(requestID.name)
                {
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
                // HEAD and 304 may announce the length of the body they do not carry.
                if let announcedLength {
                    out.field("content-length", decimal: announcedLength)
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
        } }
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
        return self.withHeadBytes { FieldBytes($0).equalsASCIICaseInsensitive(other) }
    }
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
    /// RFC 9110 §9.2.2: sending these twice has the effect of sending them once. The proxy's
    /// list (SPEC's) leaves out `TRACE`, which the RFC counts: a diagnostic that echoes the
    /// request has nothing to gain from a second try, and a retried one would echo twice.
    var isIdempotent: Bool {
        switch self {
        case .GET, .HEAD, .OPTIONS, .PUT, .DELETE: true
        default: false
        }
    }
}
