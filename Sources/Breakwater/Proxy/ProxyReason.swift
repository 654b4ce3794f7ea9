import NIOCore
import NIOHTTP1

/// Why the proxy answered a request itself instead of the app.
///
/// The raw values are the `X-Breakwater-Reason` header values that SPEC.md fixes: users grep
/// logs and build alerts on them, so they never change.
public enum ProxyReason: String, Sendable, CaseIterable {
    case badRequest = "bad_request"
    case headerTimeout = "header_timeout"
    case bodyTooLarge = "body_too_large"
    case headerTooLarge = "header_too_large"
    case upstreamUnavailable = "upstream_unavailable"
    case hardLimit = "hard_limit"
    case queueTimeout = "queue_timeout"
    case breakerOpen = "breaker_open"
    case notReady = "not_ready"
    case draining = "draining"
    case upstreamTimeout = "upstream_timeout"

    public var status: HTTPResponseStatus {
        switch self {
        case .badRequest: .badRequest
        case .headerTimeout: .requestTimeout
        case .bodyTooLarge: .payloadTooLarge
        case .headerTooLarge: .requestHeaderFieldsTooLarge
        case .upstreamUnavailable: .badGateway
        case .hardLimit, .queueTimeout, .breakerOpen, .notReady, .draining: .serviceUnavailable
        case .upstreamTimeout: .gatewayTimeout
        }
    }

    /// The human half of the JSON body; the machine half is the reason itself.
    var message: String {
        switch self {
        case .badRequest: "malformed request"
        case .headerTimeout: "request head not received in time"
        case .bodyTooLarge: "request body too large"
        case .headerTooLarge: "request head too large"
        case .upstreamUnavailable: "upstream unavailable"
        case .hardLimit: "too many requests in progress"
        case .queueTimeout: "timed out waiting for capacity"
        case .breakerOpen: "temporarily unavailable"
        case .notReady: "upstream not ready"
        case .draining: "shutting down"
        case .upstreamTimeout: "upstream timed out"
        }
    }

    /// SPEC's JSON body, built once per reason: a refusal under load should cost little.
    var body: String { Self.bodies[self.ordinal] }

    private static let bodies = cases.map { #"{"error":"\#($0.message)","reason":"\#($0.rawValue)"}"# }

    /// The reason's place in `allCases`, for tables that a `Dictionary` would reach by hashing
    /// the raw value's string.
    var ordinal: Int { Self.cases.firstIndex(of: self)! }

    /// `allCases` kept: the synthesized property builds a new array on every call.
    private static let cases = allCases

    /// Load shed or refused before reaching the app: counted in `breakwater_shed_total`.
    var isShed: Bool {
        switch self {
        case .hardLimit, .queueTimeout, .breakerOpen, .notReady, .draining: true
        default: false
        }
    }

    /// After these the request stream cannot be trusted, so the connection is closed.
    var closesConnection: Bool {
        switch self {
        case .badRequest, .headerTimeout, .bodyTooLarge, .headerTooLarge, .draining: true
        default: false
        }
    }
}

/// A response the proxy makes itself: SPEC's small JSON body plus `X-Breakwater-Reason`.
struct LocalResponse {
    var status: HTTPResponseStatus
    /// Nil only for the answers that stand in for no failure (the public readiness check).
    var reason: ProxyReason?
    var contentType = "application/json"
    var body: String
    /// Whole seconds; 503s always carry one so well-behaved clients back off.
    var retryAfterSeconds: Int?
    /// The request id header and value, returned on every answer.
    var requestID: (name: String, value: String)?

    /// - Parameter fallback: a route's own answer for an open breaker, in place of the
    ///   generic body (the reason header stays, so the answer can still be told apart).
    init(_ reason: ProxyReason, retryAfterSeconds: Int? = nil, fallback: FallbackConfig? = nil) {
        self.status = fallback.map { HTTPResponseStatus(statusCode: $0.status) } ?? reason.status
        self.reason = reason
        self.contentType = fallback?.contentType ?? "application/json"
        self.body = fallback?.body ?? reason.body
        self.retryAfterSeconds = retryAfterSeconds ?? (reason.status == .serviceUnavailable ? 1 : nil)
    }

    /// A plain JSON answer of the proxy's own.
    init(status: HTTPResponseStatus, json: String) {
        self.status = status
        self.reason = nil
        self.body = json
        self.retryAfterSeconds = status == .serviceUnavailable ? 1 : nil
    }

    var closesConnection: Bool { self.reason?.closesConnection ?? false }

    func head(version: HTTPVersion, keepAlive: Bool) -> HTTPResponseHead {
        var headers = HeaderFields(capacity: 6)
        headers.add(name: "content-type", value: self.contentType)
        headers.add(name: "content-length", value: String(self.body.utf8.count))
        if let reason = self.reason {
            headers.add(name: "x-breakwater-reason", value: reason.rawValue)
        }
        if let retryAfterSeconds {
            headers.add(name: "retry-after", value: String(retryAfterSeconds))
        }
        if let requestID {
            headers.add(name: requestID.name, value: requestID.value)
        }
        if !keepAlive {
            headers.add(name: "connection", value: "close")
        } else if version.minor == 0 {
            headers.add(name: "connection", value: "keep-alive")
        }
        return HTTPResponseHead(version: version, status: self.status, headers: headers.built)
    }

    func bodyBuffer(allocator: ByteBufferAllocator) -> ByteBuffer {
        allocator.buffer(string: self.body)
    }
}

extension LocalResponse {
    /// The whole response as bytes, for the one place that answers below the HTTP codec: the
    /// connection guard, which must answer a head that never finished parsing.
    func encoded(allocator: ByteBufferAllocator) -> ByteBuffer {
        let head = self.head(version: .http1_1, keepAlive: false)
        var buffer = allocator.buffer(capacity: 256 + self.body.utf8.count)
        buffer.writeString("HTTP/1.1 \(head.status.code) \(head.status.reasonPhrase)\r\n")
        for (name, value) in head.headers {
            buffer.writeString("\(name): \(value)\r\n")
        }
        buffer.writeString("\r\n")
        buffer.writeString(self.body)
        return buffer
    }
}
