import NIOHTTP1

/// How a message's body is delimited on the wire.
///
/// Both encoders run with `automaticallySetFramingHeaders = false`: the proxy decides framing
/// itself, from what the sender declared, so a HEAD or 304 response keeps its informative
/// `Content-Length` and a body never changes its length on the way through.
enum MessageFraming: Equatable {
    case noBody
    case contentLength(Int)
    case chunked
    /// Only for responses: the body runs until the sender closes (HTTP/1.0 style).
    case untilClose

    /// Framing of a request as the (strict) parser accepted it: llhttp has already rejected
    /// Content-Length together with Transfer-Encoding, conflicting lengths and codings other
    /// than a final `chunked`.
    init(request fields: MessageFields) {
        self = fields.declaredFraming ?? .noBody
    }

    /// Framing of a response from the app, for a request with `method`.
    init(response head: ResponseHead, fields: MessageFields, requestMethod: HTTPMethod) {
        let code = head.status.code
        if requestMethod == .HEAD || (100..<200).contains(code) || code == 204 || code == 304 {
            self = .noBody
        } else {
            self = fields.declaredFraming ?? .untilClose
        }
    }
}
