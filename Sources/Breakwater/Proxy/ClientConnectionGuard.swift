import NIOCore

/// What the HTTP layer tells the guard about the requests on its connection.
enum ClientConnectionEvent {
    /// A request head was decoded: its head arrived in time and within the size limit.
    case requestHeadReceived
    /// A request's end was decoded: bytes read after it start the next head, where bytes read
    /// before it were the request's own body.
    case requestEnded
    /// The response to a request was written in full.
    case exchangeFinished
    /// The HTTP layer answered on its own and is closing the connection: nothing more to guard.
    case closing
}

/// Guards a client connection at the byte level, below the HTTP parser, where a request head
/// that never completes is still visible: a head must arrive within `header_read_timeout`
/// (a slowloris client is cut off on time, however slowly it trickles) and within
/// `max_header_bytes` (request line included), and a keep-alive connection with no request
/// is closed after `idle_timeout`.
///
/// The parser knows nothing of time, and the exchange knows nothing of the bytes before a head,
/// so this handler sits first in the pipeline and learns about heads and finished exchanges
/// from `DownstreamHandler`, which holds it and calls `note(_:)`: both live on the connection's
/// event loop, and an outbound user event would cost a dynamic cast and a walk through the
/// handlers between them, twice on every request.
final class ClientConnectionGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State {
        /// Waiting for a head (connection start, or bytes after an idle spell); `bytes` counts
        /// what arrived of it so far, and 0 means the client has not started one.
        case awaitingHead(bytes: Int)
        /// Requests in progress; their bodies and responses are the exchange's business.
        /// `bytesArrived` notes that the next head has started (bytes came after the last
        /// request's end), so its timer starts at once.
        case busy(exchanges: Int, bytesArrived: Bool)
        /// Between requests on a keep-alive connection.
        case idle
        case closed
    }

    private let headerReadTimeout: TimeAmount
    private let idleTimeout: TimeAmount
    private let maxHeaderBytes: Int
    private var state = State.awaitingHead(bytes: 0)
    /// When the first byte of the awaited head arrived: a refusal's duration counts from it,
    /// as nginx's `$request_time` does. Nil until a byte of it came.
    private var headStartedAt: NIODeadline?
    /// The header or idle deadline, whichever applies in `state`; moved on every request.
    private var timer: MovableDeadline?
    private var context: ChannelHandlerContext?

    /// Told of each answer the guard makes itself, with the client's address and how long its
    /// head had been arriving, so that it is logged and counted like any other
    /// (`recordUnreadRequest`).
    private let recordRefusal: (ProxyReason, _ client: String?, _ duration: Duration) -> (name: String, value: String)?

    private let clock: EventClock

    /// - Parameters:
    ///   - clock: the loop's (`EventLoopContext.clock`).
    ///   - recordRefusal: returns the request id header the answer carries, if any.
    init(
        configuration: ServerConfig,
        clock: EventClock,
        recordRefusal: @escaping (ProxyReason, _ client: String?, _ duration: Duration) -> (name: String, value: String)?
    ) {
        self.clock = clock
        self.headerReadTimeout = TimeAmount(configuration.headerReadTimeout)
        self.idleTimeout = TimeAmount(configuration.idleTimeout)
        self.maxHeaderBytes = configuration.maxHeaderBytes
        self.recordRefusal = recordRefusal
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        // Strongly, with the cycle through the timer broken in `handlerRemoved`, which NIO
        // calls for every handler when the channel closes: a weak reference would put this
        // handler's reference counts in a side table, and every retain on the data path would
        // take the slow path.
        self.timer = MovableDeadline(eventLoop: context.eventLoop) {
            guard let context = self.context else { return }
            self.expire(context: context)
        }
        // From accept: a connection that never sends a byte is closed on time too.
        self.timer?.set(in: self.headerReadTimeout)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.state = .closed
        self.timer?.cancel()
        self.timer = nil
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.state = .closed
        self.timer?.cancel()
        context.fireChannelInactive()
    }

    /// The first handler to see a client's bytes: everything they set off, down to the
    /// exchange, the app connection's write and a refusal's answer, is one event of the loop's
    /// `clock`.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.clock.during { self.received(data, context: context) }
    }

    private func received(_ data: NIOAny, context: ChannelHandlerContext) {
        let count = self.unwrapInboundIn(data).readableBytes
        switch self.state {
        case .idle:
            self.state = .awaitingHead(bytes: count)
            self.headStarted()
        case .awaitingHead(let bytes):
            if bytes == 0 { self.headStartedAt = self.clock.now() }
            self.state = .awaitingHead(bytes: bytes + count)
        case .busy(let exchanges, _):
            self.state = .busy(exchanges: exchanges, bytesArrived: true)
        case .closed:
            return
        }
        context.fireChannelRead(data)
        // A head that fits decodes during the read above and moves us to `.busy`.
        if case .awaitingHead(let bytes) = self.state, bytes > self.maxHeaderBytes {
            self.reject(context: context, with: .headerTooLarge)
        }
    }

    /// What the HTTP layer saw; called on the connection's event loop.
    func note(_ event: ClientConnectionEvent) {
        switch (self.state, event) {
        case (_, .closing):
            self.state = .closed
            self.cancelTimer()
        case (.awaitingHead, .requestHeadReceived), (.idle, .requestHeadReceived):
            self.cancelTimer()
            self.state = .busy(exchanges: 1, bytesArrived: false)
        case (.busy(let exchanges, _), .requestHeadReceived):
            self.state = .busy(exchanges: exchanges + 1, bytesArrived: false)
        case (.busy(let exchanges, _), .requestEnded):
            // What came so far was this request's body. Bytes of the next head in the same read
            // are not told apart: that head waits on the idle timer, and its next read starts
            // the header timer.
            self.state = .busy(exchanges: exchanges, bytesArrived: false)
        case (_, .requestEnded):
            break
        case (.busy(let exchanges, let bytesArrived), .exchangeFinished):
            if exchanges > 1 {
                self.state = .busy(exchanges: exchanges - 1, bytesArrived: bytesArrived)
            } else if bytesArrived {
                // Part of the next head is already here (pipelined): its clock is running. How
                // much of it is not known (it came in a read with the request before), so it
                // counts as one byte: enough to be answered, not silently closed, if it stalls.
                self.state = .awaitingHead(bytes: 1)
                self.headStarted()
            } else {
                self.state = .idle
                self.timer?.set(self.clock.now() + self.idleTimeout)
            }
        case (.awaitingHead, .exchangeFinished), (.idle, .exchangeFinished), (.closed, _):
            break  // a local answer to a head that never decoded; the connection is closing
        }
    }

    /// A head begins to arrive on a connection that has served a request: its header timeout
    /// starts with it.
    private func headStarted() {
        let now = self.clock.now()
        self.headStartedAt = now
        self.timer?.set(now + self.headerReadTimeout)
    }

    /// Part of a request head has arrived, and the rest is awaited.
    var isReceivingHead: Bool {
        if case .awaitingHead(let bytes) = self.state { bytes > 0 } else { false }
    }

    /// How long the head now awaited has been arriving: zero before its first byte.
    var timeSinceHeadStarted: Duration {
        self.headStartedAt.map { .nanoseconds((self.clock.now() - $0).nanoseconds) } ?? .zero
    }

    private func cancelTimer() {
        self.timer?.set(nil)
    }

    private func expire(context: ChannelHandlerContext) {
        switch self.state {
        case .awaitingHead(bytes: 0):
            // Not one byte of a request: a browser's preconnect, a port scan. Closed without an
            // answer or a log line, as nginx does (HAProxy: `option http-ignore-probes`).
            self.state = .closed
            context.close(promise: nil)
        case .awaitingHead:
            self.reject(context: context, with: .headerTimeout)
        case .idle:
            self.state = .closed
            context.close(promise: nil)
        case .busy, .closed:
            break
        }
    }

    /// Answers below the codec, which has no request to answer, then closes: after a head that
    /// was too slow or too large the byte stream cannot be trusted.
    private func reject(context: ChannelHandlerContext, with reason: ProxyReason) {
        self.state = .closed
        self.cancelTimer()
        var response = LocalResponse(reason)
        response.requestID = self.recordRefusal(reason, context.channel.remoteAddress?.ipAddress, self.timeSinceHeadStarted)
        let encoded = response.encoded(version: .http1_1, keepAlive: false, withBody: true, allocator: context.channel.allocator)
        let written = context.writeAndFlush(self.wrapOutboundOut(encoded))
        LingeringClose.close(context.channel, after: written, writeTimeout: self.idleTimeout)
    }
}
