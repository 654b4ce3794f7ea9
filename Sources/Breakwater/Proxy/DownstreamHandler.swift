import NIOCore
import NIOHTTP1

/// The client side of a proxied connection: parses its requests (`HTTPParser`), turns them
/// into `ProxyExchange`s, one at a time, and writes what they answer.
///
/// Pipelined requests wait here, in order, until the answer before them is done. This is what
/// NIO's `HTTPServerPipelineHandler` does, but that handler also stops reading while any answer
/// is pending, so every request on a keep-alive connection cost two `epoll_ctl` calls (read
/// interest off, then on again). Here reads stop only once a pipelined request is actually
/// waiting, which for ordinary clients is never.
///
/// Also the client half of backpressure: `read` is held while the exchange cannot take more of
/// the request body (the app is slow to read it), and writability changes are passed to the
/// exchange so that a slow client slows down reads from the app.
final class DownstreamHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = Never
    typealias OutboundOut = IOData

    /// What arrived for a request behind the current one.
    private enum Pipelined {
        case part(RequestPart)
        case parseError(HTTPParserError)
    }

    private let generation: CurrentGeneration
    private let loop: EventLoopContext
    /// Past a request to switch protocols (or `CONNECT`), it keeps what the client sends for
    /// the tunnel, if the app agrees, and reads are held until then.
    private let parser: HTTPParser
    /// The byte-level guard below the parser, told of each head and each finished answer.
    private let connectionGuard: ClientConnectionGuard
    /// The answers' bytes, written from this handler's own context: as a handler of its own,
    /// the encoder was one more stop for every write, flush and read of every request, and each
    /// response part was boxed in `NIOAny` on the way in and cast back out.
    private var responseEncoder = HTTPMessageEncoder()
    private var context: ChannelHandlerContext?
    private var exchange: ProxyExchange?
    private var clientAddress: String?
    private var readHeld = false
    /// Requests (and a decoding error) that came while an answer was still going out.
    private var pipelined = CircularBuffer<Pipelined>()
    private var deliveringPipelined = false
    /// The last response is decided (`Connection: close`, a refused request, a cut): anything
    /// the client sent behind it is dropped unanswered, since the client was told none after it
    /// would be read.
    private var closing = false
    /// A drain began (`ChannelShouldQuiesceEvent`): the answer in progress is the last.
    private(set) var isQuiescing = false
    /// The rest of a request answered before its end (a refusal, the app's early answer),
    /// being read and dropped so that the connection can carry the next request: the bytes
    /// dropped so far, the route's `body_timeout` (the longest wait for each piece), and when
    /// the dropping must be over, however steadily the body trickles: the route's `timeout`
    /// after the answer (as nginx's `lingering_time` bounds its discarding), so that a proxy
    /// shedding under load does not keep a slot of `max_connections` for days.
    private var discarding: (bytes: Int, bodyTimeout: TimeAmount, endsBy: NIODeadline)?

    /// The most of a request body read and dropped after an early answer to keep the
    /// connection. Past it closing is cheaper: a shed upload of megabytes is not worth a kept
    /// connection.
    static let maxDiscardedBodyBytes = 64 * 1024

    init(generation: CurrentGeneration, loop: EventLoopContext, connectionGuard: ClientConnectionGuard, limits: HTTPParser.Limits) {
        self.generation = generation
        self.loop = loop
        self.connectionGuard = connectionGuard
        self.parser = HTTPParser(kind: .request, limits: limits)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.parser.delegate = self
        self.clientAddress = context.channel.remoteAddress?.ipAddress
        // Held strongly until `handlerRemoved` (see `ClientConnectionGuard.handlerAdded`).
        self.exchangeDeadline = MovableDeadline(eventLoop: context.eventLoop) {
            self.exchangeDeadlinePassed()
        }
    }

    /// Bytes the client sent behind its request to switch go on to the tunnel, which is in place
    /// behind this handler when the splice removes it.
    func handlerRemoved(context: ChannelHandlerContext) {
        if let rest = self.parser.takeBytesAfterSwitch() {
            context.fireChannelRead(self.wrapInboundOut(rest))
        }
        self.parser.delegate = nil
        self.context = nil
        self.exchangeDeadline?.cancel()
        self.exchangeDeadline = nil
    }

    /// The current exchange's deadline (its timeout, or its body's), kept here rather than in
    /// the exchange so that one timer serves every request on the connection; and, after an
    /// early answer, the deadline for the next piece of the body being dropped.
    private var exchangeDeadline: MovableDeadline?

    func setExchangeDeadline(_ deadline: NIODeadline?) {
        self.exchangeDeadline?.set(deadline)
    }

    private func exchangeDeadlinePassed() {
        if let exchange = self.exchange {
            exchange.deadlinePassed()
        } else if self.discarding != nil, let context {
            // The rest of an answered request's body stalled: nothing is owed, so no answer.
            self.closeAfterLastAnswer(context: context, lingering: true)
        }
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.closing else { return }
        var next: ByteBuffer? = self.unwrapInboundIn(data)
        while let bytes = next, !self.closing {
            next = nil
            do {
                if case .messageEnded(let rest) = try self.parser.parse(bytes) {
                    next = rest  // a pipelined request
                }
            } catch {
                self.parseFailed(error)
            }
        }
    }

    /// A request part, as the parser finds it.
    private func received(_ part: RequestPart) {
        guard !self.closing else { return }
        if case .end = part {
            self.connectionGuard.note(.requestEnded)
        }
        if !self.pipelined.isEmpty || (self.exchange != nil && part.isHead) {
            // A request behind one whose answer is still going out: it waits its turn.
            self.pipelined.append(.part(part))
            return
        }
        self.deliver(part)
    }

    /// Hands a request part to its exchange; a part of a request that was already answered
    /// (early, before its body was read) has none, and is dropped (`discard`).
    private func deliver(_ part: RequestPart) {
        switch part {
        case .head(let head):
            self.connectionGuard.note(.requestHeadReceived)
            let exchange = ProxyExchange(
                request: head,
                clientAddress: self.clientAddress,
                shared: self.generation.value,
                loop: self.loop,
                downstream: self
            )
            self.exchange = exchange
            exchange.start()
        case .body(let body):
            if let exchange = self.exchange {
                exchange.clientSentBody(body)
            } else {
                self.discard(body)
            }
        case .end:
            if let exchange = self.exchange {
                exchange.clientSentEnd()
            } else if self.discarding != nil {
                self.discardEnded()
            }
        }
    }

    /// A piece of the body of a request already answered: dropped, while the rest stays within
    /// `maxDiscardedBodyBytes` and keeps coming within `body_timeout`.
    private func discard(_ body: ByteBuffer) {
        guard var discarding = self.discarding, let context else { return }
        discarding.bytes += body.readableBytes
        self.discarding = discarding
        if discarding.bytes > Self.maxDiscardedBodyBytes {
            self.closeAfterLastAnswer(context: context, lingering: true)
        } else {
            self.awaitNextDiscardedPiece()
        }
    }

    /// The next piece of the body being dropped is due within `body_timeout`, and no later
    /// than the dropping's end.
    private func awaitNextDiscardedPiece() {
        guard let discarding = self.discarding else { return }
        self.exchangeDeadline?.set(min(self.loop.clock.now() + discarding.bodyTimeout, discarding.endsBy))
    }

    /// The answered request's end came: the connection carries the next request.
    private func discardEnded() {
        guard let context else { return }
        self.discarding = nil
        self.exchangeDeadline?.set(nil)
        if self.isQuiescing {
            // The client, told it could, may be sending its next request already.
            self.closeAfterLastAnswer(context: context, lingering: true)
            return
        }
        self.connectionGuard.note(.exchangeFinished)
        self.deliverPipelined()
        self.resumeReadingIfNeeded()
    }

    /// Starts the requests that waited behind the answer that just ended, up to the next one
    /// that has to wait again.
    private func deliverPipelined() {
        // An exchange that answers at once ends inside `deliver`, and lands here again: the
        // outer loop carries on instead.
        guard !self.deliveringPipelined else { return }
        self.deliveringPipelined = true
        defer { self.deliveringPipelined = false }
        while !self.closing, let next = self.pipelined.first {
            if let exchange = self.exchange {
                switch next {
                case .part(.head): return
                case .parseError where exchange.requestEnded: return
                default: break
                }
            }
            self.pipelined.removeFirst()
            switch next {
            case .part(let part): self.deliver(part)
            case .parseError(let error): self.answerParseError(error)
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.exchange?.clientReadComplete()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        self.exchange?.clientWritabilityChanged(isWritable: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.pipelined.removeAll()
        self.discarding = nil
        self.exchangeDeadline?.set(nil)
        self.abandonExchange()
        context.fireChannelInactive()
    }

    /// A drain: an idle connection closes now, and so does one dropping the rest of a body
    /// already answered (lingering: its client is still sending); a busy one after the answer
    /// in progress, which tells the client so (`Connection: close`) when its head has not gone
    /// out yet. Requests pipelined behind it are not started. A head that is arriving is a
    /// request in progress too: it is answered, with `Connection: close`, or cut off by
    /// `header_read_timeout`.
    ///
    /// "Idle" means between exchanges, not done writing: a slow client may still be taking the
    /// last answer from NIO's buffer, which a plain close would throw away. So the close waits
    /// for what was written to leave (`LingeringClose`, without the lingering: nothing is
    /// being sent).
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        self.isQuiescing = true
        guard self.exchange == nil, !self.closing, !self.connectionGuard.isReceivingHead else {
            return  // busy, receiving a head, or already closing after its last answer
        }
        // Dropping the rest of an answered body: nothing is owed, but the client is sending.
        self.closeAfterLastAnswer(context: context, lingering: self.discarding != nil)
    }

    /// Closes a connection whose last answer is written, once that has left.
    ///
    /// - Parameter lingering: the client may still be sending (see `LingeringClose`).
    private func closeAfterLastAnswer(context: ChannelHandlerContext, lingering: Bool) {
        self.closing = true
        self.discarding = nil
        self.pipelined.removeAll()
        self.connectionGuard.note(.closing)
        // An empty write completes once everything written before it has.
        let written = context.writeAndFlush(self.wrapOutboundOut(.byteBuffer(context.channel.allocator.buffer(capacity: 0))))
        LingeringClose.close(
            context.channel,
            after: written,
            writeTimeout: TimeAmount(self.generation.value.server.idleTimeout),
            lingering: lingering
        )
    }

    /// Resets and other I/O errors: the client is gone.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func parseFailed(_ parserError: HTTPParserError) {
        guard !self.closing, let context, context.channel.isActive else {
            // A stream the connection's close cut short can no longer be answered.
            return
        }
        if !self.pipelined.isEmpty || (self.exchange?.requestEnded ?? false) {
            // A request behind the current one is malformed: answered in its turn.
            self.pipelined.append(.parseError(parserError))
            return
        }
        self.answerParseError(parserError)
    }

    private func answerParseError(_ error: HTTPParserError) {
        if self.discarding != nil, let context {
            // The rest of an answered request's body is malformed: it was answered already, and
            // the stream can no longer be trusted.
            self.closeAfterLastAnswer(context: context, lingering: true)
            return
        }
        if let exchange = self.exchange, exchange.hasStartedResponse {
            // Too late for a status code: the client sees a cut response, and the exchange ends
            // with it (its app connection, its slots).
            exchange.cut()
            return
        }
        let reason: ProxyReason = error == .headerOverflow ? .headerTooLarge : .badRequest
        var response = LocalResponse(reason)
        if let exchange = self.exchange {
            // Its body was malformed: the request is logged and counted as this answer.
            exchange.answeredStatus = Int(reason.status.code)
            exchange.answerReason = reason.rawValue
            response.requestID = (exchange.shared.trace.requestIDHeader, exchange.trace.requestID)
            self.abandonExchange()
        } else {
            response.requestID = self.generation.value.recordUnreadRequest(
                reason,
                client: self.clientAddress,
                duration: self.connectionGuard.timeSinceHeadStarted,
                loop: self.loop
            )
        }
        self.respond(response, version: .http1_1, withBody: true, closeConnection: true)
    }

    // MARK: Backpressure

    func read(context: ChannelHandlerContext) {
        if self.shouldHoldReads {
            self.readHeld = true
        } else {
            context.read()
        }
    }

    /// Called by the exchange once it can take request body again, and when an answer ends.
    func resumeReadingIfNeeded() {
        guard self.readHeld, let context, !self.shouldHoldReads else { return }
        self.readHeld = false
        context.read()
    }

    /// A pipelined request waits (reading on would only pile up more), or the exchange cannot
    /// take more body yet.
    private var shouldHoldReads: Bool {
        if !self.pipelined.isEmpty { return true }
        // What follows a switch is the tunnel's to read, if the app agrees; and if it does
        // not, the connection closes after the answer without reading it.
        if self.parser.hasSwitched, !self.closing { return true }
        if let exchange = self.exchange { return !exchange.wantsClientReads }
        return false
    }

    // MARK: Writing, for the exchange

    var isWritable: Bool { self.context?.channel.isWritable ?? false }

    func writeResponsePart(_ part: OutgoingHTTPPart) {
        guard let context else { return }
        self.responseEncoder.write(part, context: context, promise: nil)
    }

    func flush() {
        self.context?.flush()
    }

    /// Ends the exchange's response; with `closeConnection` the connection closes once it is out
    /// (lingering: see `LingeringClose`).
    ///
    /// Then the next pipelined request, if one waits, starts at once; or, when the answer came
    /// before the request's end, the rest of its body is read and dropped first (`discard`).
    func finishResponse(trailers: HTTPHeaders?, closeConnection: Bool) {
        guard let context else { return }
        let finished = self.exchange
        self.exchange = nil
        self.responseEncoder.write(.end(trailers), context: context, promise: nil)
        if closeConnection || self.isQuiescing {
            self.closeAfterLastAnswer(context: context, lingering: true)
            return
        }
        context.flush()
        if let finished, !finished.clientStreamPositionKnown {
            // Answered before the request's end: the connection takes the next request once the
            // rest of the body has been read (and dropped), and the guard hears of the end then.
            self.discarding = (0, finished.route.bodyTimeout, self.loop.clock.now() + finished.route.timeout)
            self.awaitNextDiscardedPiece()
        } else {
            self.connectionGuard.note(.exchangeFinished)
            self.deliverPipelined()
        }
        self.resumeReadingIfNeeded()
    }

    /// Writes a response the proxy makes itself and ends the exchange.
    ///
    /// - Parameter withBody: false for an answer to HEAD (see `LocalResponse.encoded`).
    func respond(_ response: LocalResponse, version: HTTPVersion, withBody: Bool, closeConnection: Bool) {
        guard let context else { return }
        // Head and body in one buffer, past the encoder: it has nothing to frame.
        let message = response.encoded(version: version, keepAlive: !closeConnection, withBody: withBody, allocator: context.channel.allocator)
        context.write(NIOAny(IOData.byteBuffer(message)), promise: nil)
        self.finishResponse(trailers: nil, closeConnection: closeConnection)
    }

    /// Closes the connection at once, for `ProxyExchange.cut`, which has ended the exchange.
    func cutConnection() {
        self.closing = true
        self.pipelined.removeAll()
        self.exchange = nil
        self.context?.close(promise: nil)
    }

    /// Hands the connection over to a byte tunnel after the app agreed to switch protocols.
    func startTunnel(response: EncodedHead, upstream: UpstreamConnection) {
        guard let context else {
            upstream.close()
            return
        }
        self.exchange = nil
        self.responseEncoder.write(.head(response), context: context, promise: nil)
        context.flush()
        do {
            try Tunnel.splice(
                client: context.channel,
                upstream: upstream.channel,
                writeTimeout: TimeAmount(self.generation.value.server.idleTimeout),
                draining: self.isQuiescing
            )
        } catch {
            context.close(promise: nil)
            upstream.close()
        }
    }

    private func abandonExchange() {
        if let exchange = self.exchange {
            self.exchange = nil
            exchange.abandon()
        }
    }
}

extension DownstreamHandler: HTTPParserDelegate {
    func parsedHead(_ head: HTTPParser.Head) {
        guard case .request(let request) = head else { preconditionFailure("a request parser read a response") }
        self.received(.head(request))
    }

    func parsedBody(_ body: ByteBuffer) {
        self.received(.body(body))
    }

    func parsedEnd(trailers: HTTPHeaders?) {
        self.received(.end(trailers))
    }
}

extension RequestPart {
    fileprivate var isHead: Bool {
        if case .head = self { return true }
        return false
    }
}
