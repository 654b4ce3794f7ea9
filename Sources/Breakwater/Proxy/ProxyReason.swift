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

    /// The whole response, head and body, as one buffer: these answers are small and known
    /// whole, so they go out in one write.
    ///
    /// - Parameter withBody: false for an answer to HEAD, which announces the body's length
    ///   but must not carry it (the client would read it as the next response).
    func encoded(version: HTTPVersion, keepAlive: Bool, withBody: Bool, allocator: ByteBufferAllocator) -> ByteBuffer {
        HeadWriter.written(allocator: allocator, expectedLength: 512 + self.body.utf8.count) { out in
            out.statusLine(version: version, status: self.status)
            out.field("content-type", self.contentType)
            out.field("content-length", decimal: self.body.utf8.count)
            if let reason = self.reason {
                out.field("x-breakwater-reason", reason.rawValue)
            }
            if let retryAfterSeconds {
                out.field("retry-after", decimal: retryAfterSeconds)
            }
            if let requestID {
                out.field(requestID.name, requestID.value)
            }
            if !keepAlive {
                out.field("connection", "close")
            } else if version.minor == 0 {
                out.field("connection", "keep-alive")
            }
            out.endHead()
            if withBody {
                out.append(self.body)
            }
        }.bytes
    }
}
