import NIOCore
import NIOHTTP1

/// One request's journey through the proxy, top to bottom:
/// route → attempt (connect, forward, timeout) → upstream response → client response.
///
/// Lives on the client connection's event loop, which is also where its upstream connection
/// lives, so both sides are driven without locks. Bodies stream in both directions: the request
/// body goes to the app as it arrives (reads from the client pause while the app's socket is
/// full), and the response goes to the client as it arrives (reads from the app pause while the
/// client's socket is full).
final class ProxyExchange {
    private enum Phase {
        /// Waiting for an upstream connection; request body parts queue in `pendingBody`.
        case connecting
        /// The request is going to the app; no response head yet.
        case forwarding(UpstreamConnection)
        /// The response head went to the client; its body is streaming.
        case responding(UpstreamConnection)
        /// The app answered 101: the connection is about to become a tunnel.
        case upgrading(UpstreamConnection, HTTPResponseHead)
        case finished
    }

    private let request: HTTPRequestHead
    private let requestFraming: MessageFraming
    private let isUpgrade: Bool
    private let clientAddress: String?
    private let shared: ProxyShared
    private let pool: UpstreamConnectionPool
    private let downstream: DownstreamHandler
    private let route: RouteConfig

    private var phase = Phase.connecting
    private var pendingBody = CircularBuffer<ByteBuffer>()
    private var requestBodyBytes = 0
    /// The body so far, kept while it fits `maxReplayBytes` so a failed attempt can be sent
    /// again; nil once it outgrew that (Linkerd's rule: larger bodies are not retried).
    private var replayableBody: [ByteBuffer]? = []
    private var attempts = 0
    static let maxReplayBytes = 64 * 1024
    /// The client sent the whole request.
    private var requestEnded = false
    /// The whole request reached the upstream connection: only then may it carry another.
    private var requestForwarded = false
    private var responseFraming = MessageFraming.noBody
    private var upstreamKeepAlive = false
    private var clientKeepAlive = false
    /// When the current wait (for a response head, or between two body pieces) runs out.
    private var deadline = NIODeadline.distantFuture
    private var deadlineTimer: (task: Scheduled<Void>, firesAt: NIODeadline)?

    init(
        request: HTTPRequestHead,
        clientAddress: String?,
        shared: ProxyShared,
        pool: UpstreamConnectionPool,
        downstream: DownstreamHandler
    ) {
        self.request = request
        self.requestFraming = MessageFraming(request: request)
        self.isUpgrade = HeaderRewriting.isUpgradeRequest(request)
        self.clientAddress = clientAddress
        self.shared = shared
        self.pool = pool
        self.downstream = downstream
        let router = shared.router
        self.route = router.routes[router.routeIndex(method: request.method.rawValue, uri: request.uri)]
    }

    var hasStartedResponse: Bool {
        switch self.phase {
        case .responding, .upgrading: true
        case .connecting, .forwarding, .finished: false
        }
    }

    /// Whether the client may send more request body now.
    var wantsClientReads: Bool {
        switch self.phase {
        case .forwarding(let connection), .responding(let connection): connection.isWritable
        case .connecting, .upgrading: false
        case .finished: true
        }
    }

    // MARK: The journey

    func start() {
        if case .contentLength(let length) = self.requestFraming, length > self.shared.server.maxBodyBytes {
            self.respondLocally(.bodyTooLarge)
            return
        }
        if self.request.headers[canonicalForm: "expect"].contains(where: { $0.equalsASCIICaseInsensitive("100-continue") }) {
            // The app never sees `Expect` (it is answered here), so the client is told to go on.
            self.downstream.writeResponsePart(.head(HTTPResponseHead(version: self.request.version, status: .continue)))
            self.downstream.flush()
        }
        self.attempt()
    }

    /// Leases a connection to the app and sends the request on it.
    private func attempt() {
        self.attempts += 1
        self.pool.lease { result in
            guard case .connecting = self.phase else {
                // The client left while we connected; the connection never carried anything.
                if case .success(let connection) = result {
                    self.pool.release(connection, reusable: true)
                }
                return
            }
            switch result {
            case .success(let connection):
                self.forward(on: connection)
            case .failure:
                self.respondLocally(.upstreamUnavailable)
            }
        }
    }

    private func forward(on connection: UpstreamConnection) {
        self.phase = .forwarding(connection)
        connection.delegate = self
        let head = HeaderRewriting.upstreamRequest(
            self.request,
            framing: self.requestFraming,
            clientAddress: self.clientAddress,
            isUpgrade: self.isUpgrade
        )
        connection.write(.head(head))
        while let part = self.pendingBody.popFirst() {
            connection.write(.body(.byteBuffer(part)))
        }
        if self.requestEnded {
            self.finishRequest(on: connection)
        } else {
            self.resetDeadline(in: self.route.policy.bodyTimeout)
        }
        connection.flush()
        self.downstream.resumeReadingIfNeeded()
    }

    private func finishRequest(on connection: UpstreamConnection) {
        connection.write(.end(nil))
        self.requestForwarded = true
        if case .forwarding = self.phase {
            // The app has `timeout` from the end of the request to answer (Envoy's rule), so a
            // slow upload is not mistaken for a slow app.
            self.resetDeadline(in: self.route.policy.timeout)
        }
    }

    // MARK: Request body, from the client

    func clientSentBody(_ body: ByteBuffer) {
        self.requestBodyBytes += body.readableBytes
        if self.requestBodyBytes > self.shared.server.maxBodyBytes {
            self.respondLocally(.bodyTooLarge)
            return
        }
        if self.replayableBody != nil {
            if self.requestBodyBytes <= Self.maxReplayBytes {
                self.replayableBody!.append(body)
            } else {
                self.replayableBody = nil
            }
        }
        switch self.phase {
        case .connecting:
            self.pendingBody.append(body)
        case .forwarding(let connection):
            connection.write(.body(.byteBuffer(body)))
            self.resetDeadline(in: self.route.policy.bodyTimeout)
        case .responding(let connection):
            connection.write(.body(.byteBuffer(body)))
        case .upgrading, .finished:
            break
        }
    }

    func clientSentEnd() {
        self.requestEnded = true
        switch self.phase {
        case .forwarding(let connection), .responding(let connection):
            self.finishRequest(on: connection)
            connection.flush()
        case .connecting, .upgrading, .finished:
            break
        }
    }

    func clientReadComplete() {
        switch self.phase {
        case .forwarding(let connection), .responding(let connection): connection.flush()
        case .connecting, .upgrading, .finished: break
        }
    }

    func clientWritabilityChanged(isWritable: Bool) {
        switch self.phase {
        case .responding(let connection) where isWritable: connection.resumeReadingIfNeeded()
        default: break
        }
    }

    /// The client connection closed: whatever the app was doing for it is abandoned, and its
    /// connection, caught mid-exchange, cannot be reused.
    func clientWentAway() {
        switch self.phase {
        case .forwarding(let connection), .responding(let connection), .upgrading(let connection, _):
            connection.close()
        case .connecting, .finished:
            break
        }
        self.phase = .finished
        self.cancelDeadline()
    }

    // MARK: Response, from the app

    private func receivedResponseHead(_ head: HTTPResponseHead, on connection: UpstreamConnection) {
        if head.status == .switchingProtocols {
            guard self.isUpgrade else {
                self.failBeforeResponse(on: connection, reason: .upstreamUnavailable)
                return
            }
            self.phase = .upgrading(connection, head)
            self.cancelDeadline()
            return
        }
        self.responseFraming = MessageFraming(response: head, requestMethod: self.request.method)
        self.upstreamKeepAlive = head.isKeepAlive && self.responseFraming != .untilClose
        // After an upgrade request the client's decoder stops parsing, and a response that
        // comes before the request is whole leaves the client's stream position unknown.
        self.clientKeepAlive =
            self.request.isKeepAlive && self.requestEnded && !self.isUpgrade
            && (self.request.version.speaksChunked || self.responseFraming != .untilClose)
            && (self.request.version.speaksChunked || self.responseFraming != .chunked)
        self.phase = .responding(connection)
        self.resetDeadline(in: self.route.policy.bodyTimeout)
        let clientHead = HeaderRewriting.clientResponse(
            head,
            framing: self.responseFraming,
            clientVersion: self.request.version,
            keepAlive: self.clientKeepAlive
        )
        self.downstream.writeResponsePart(.head(clientHead))
    }

    private func finishResponse(trailers: HTTPHeaders?, on connection: UpstreamConnection) {
        self.phase = .finished
        self.cancelDeadline()
        self.pool.release(connection, reusable: self.requestForwarded && self.upstreamKeepAlive)
        self.downstream.finishResponse(trailers: trailers, closeConnection: !self.clientKeepAlive)
    }

    /// The app failed before a response head: the client still gets a status code.
    private func failBeforeResponse(on connection: UpstreamConnection, reason: ProxyReason) {
        connection.close()
        self.respondLocally(reason)
    }

    private func respondLocally(_ reason: ProxyReason) {
        switch self.phase {
        case .forwarding(let connection):
            connection.close()
        case .responding(let connection), .upgrading(let connection, _):
            // A status line is already out: cut instead.
            connection.close()
            self.phase = .finished
            self.cancelDeadline()
            self.downstream.cutConnection()
            return
        case .connecting, .finished:
            break
        }
        self.phase = .finished
        self.cancelDeadline()
        let closeConnection = reason.closesConnection || !self.requestEnded || !self.request.isKeepAlive || self.isUpgrade
        self.downstream.respond(LocalResponse(reason), version: self.request.version, closeConnection: closeConnection)
    }

    /// A kept-alive connection the app closed just as the request went out (its keep-alive
    /// timeout raced ours) most likely never reached the app: an idempotent request whose body
    /// we still have goes out once more, on a new connection, instead of failing.
    private func mayRetryOnFreshConnection(after connection: UpstreamConnection) -> Bool {
        connection.requestsServed > 0 && self.attempts == 1 && self.replayableBody != nil && self.request.method.isIdempotent
    }

    // MARK: Deadlines

    /// Moves the deadline to `duration` from now. One timer serves the whole exchange: when it
    /// fires early (the deadline moved on since), it re-arms for the new deadline, so a body
    /// streaming thousands of pieces costs a clock read per piece, not a timer.
    private func resetDeadline(in duration: Duration) {
        self.deadline = .now() + TimeAmount(duration)
        if let timer = self.deadlineTimer {
            if timer.firesAt <= self.deadline { return }
            timer.task.cancel()
        }
        self.armDeadlineTimer()
    }

    private func armDeadlineTimer() {
        let firesAt = self.deadline
        let task = self.pool.eventLoop.assumeIsolated().scheduleTask(deadline: firesAt) {
            self.deadlineTimer = nil
            if NIODeadline.now() < self.deadline {
                self.armDeadlineTimer()
            } else {
                self.deadlinePassed()
            }
        }
        self.deadlineTimer = (task, firesAt)
    }

    private func cancelDeadline() {
        self.deadlineTimer?.task.cancel()
        self.deadlineTimer = nil
        self.deadline = .distantFuture
    }

    private func deadlinePassed() {
        switch self.phase {
        case .forwarding(let connection) where self.requestForwarded:
            self.failBeforeResponse(on: connection, reason: .upstreamTimeout)
        case .forwarding(let connection), .responding(let connection):
            // A body stalled longer than `body_timeout`, in either direction.
            connection.close()
            self.phase = .finished
            self.downstream.cutConnection()
        case .connecting, .upgrading, .finished:
            break
        }
    }
}

extension ProxyExchange: UpstreamConnectionDelegate {
    var wantsUpstreamReads: Bool {
        self.downstream.isWritable
    }

    func upstreamReceived(_ part: HTTPClientResponsePart) {
        switch (self.phase, part) {
        case (.forwarding(let connection), .head(let head)):
            self.receivedResponseHead(head, on: connection)
        case (.responding, .body(let body)):
            self.downstream.writeResponsePart(.body(.byteBuffer(body)))
            self.resetDeadline(in: self.route.policy.bodyTimeout)
        case (.responding(let connection), .end(let trailers)):
            self.finishResponse(trailers: trailers, on: connection)
        case (.upgrading(let connection, let upgradeHead), .end):
            // Switch once the decoder that delivered this has returned: it is removed in the
            // splice, and bytes behind the 101 must leave through it.
            connection.channel.eventLoop.assumeIsolated().execute {
                guard case .upgrading = self.phase else { return }
                self.phase = .finished
                let head = HeaderRewriting.clientResponse(
                    upgradeHead,
                    framing: .noBody,
                    clientVersion: self.request.version,
                    keepAlive: true
                )
                self.downstream.startTunnel(response: head, upstream: connection)
            }
        default:
            // Parts out of order cannot come from the decoder; nothing to do for the rest.
            break
        }
    }

    func upstreamReadComplete() {
        self.downstream.flush()
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        if isWritable {
            self.downstream.resumeReadingIfNeeded()
        }
    }

    func upstreamClosed(error: (any Error)?) {
        switch self.phase {
        case .forwarding(let connection) where self.mayRetryOnFreshConnection(after: connection):
            connection.close()
            self.phase = .connecting
            self.cancelDeadline()
            self.pendingBody = CircularBuffer(self.replayableBody ?? [])
            self.attempt()
        case .forwarding(let connection):
            self.failBeforeResponse(on: connection, reason: .upstreamUnavailable)
        case .responding(let connection) where self.responseFraming == .untilClose && error == nil:
            // The app's way of ending a body without a length.
            self.upstreamKeepAlive = false
            self.finishResponse(trailers: nil, on: connection)
        case .responding, .upgrading:
            self.phase = .finished
            self.cancelDeadline()
            self.downstream.cutConnection()
        case .connecting, .finished:
            break
        }
    }
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
