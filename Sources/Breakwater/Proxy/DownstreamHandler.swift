import NIOCore
import NIOHTTP1

/// The client side of a proxied connection: turns decoded requests into `ProxyExchange`s, one
/// at a time (`HTTPServerPipelineHandler` holds pipelined requests back until the previous
/// response is done, so answers go out in order), and writes what they answer.
///
/// Also the client half of backpressure: `read` is held while the exchange cannot take more of
/// the request body (the app is slow to read it), and writability changes are passed to the
/// exchange so that a slow client slows down reads from the app.
final class DownstreamHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let generation: CurrentGeneration
    private let loop: EventLoopContext
    private var context: ChannelHandlerContext?
    private var exchange: ProxyExchange?
    private var clientAddress: String?
    private var readHeld = false
    /// The last response is decided (`Connection: close`, a refused request, a cut): requests
    /// the pipelining handler still delivers, re-entrantly as that response ends, are dropped
    /// unanswered, since the client was told none after it would be read.
    private var closing = false

    init(generation: CurrentGeneration, loop: EventLoopContext) {
        self.generation = generation
        self.loop = loop
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.clientAddress = context.channel.remoteAddress?.ipAddress
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.closing else { return }
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            context.triggerUserOutboundEvent(ClientConnectionEvent.requestHeadReceived, promise: nil)
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
            // No exchange: it already answered early and the connection closes after it.
            self.exchange?.clientSentBody(body)
        case .end:
            self.exchange?.clientSentEnd()
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
        self.abandonExchange()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            // Resets and other I/O errors: the client is gone.
            context.close(promise: nil)
            return
        }
        if self.closing {
            return  // the decoder fails again on every later read: one answer is enough
        }
        if let exchange = self.exchange, exchange.hasStartedResponse {
            // Too late for a status code: the client sees a cut response.
            context.close(promise: nil)
            return
        }
        self.abandonExchange()
        let reason: ProxyReason = parserError == .headerOverflow ? .headerTooLarge : .badRequest
        self.respond(LocalResponse(reason), version: .http1_1, withBody: true, closeConnection: true)
    }

    // MARK: Backpressure

    func read(context: ChannelHandlerContext) {
        if let exchange = self.exchange, !exchange.wantsClientReads {
            self.readHeld = true
        } else {
            context.read()
        }
    }

    /// Called by the exchange once it can take request body again.
    func resumeReadingIfNeeded() {
        guard self.readHeld, let context else { return }
        if let exchange = self.exchange, !exchange.wantsClientReads { return }
        self.readHeld = false
        context.read()
    }

    // MARK: Writing, for the exchange

    var isWritable: Bool { self.context?.channel.isWritable ?? false }

    func writeResponsePart(_ part: HTTPServerResponsePart) {
        self.context?.write(self.wrapOutboundOut(part), promise: nil)
    }

    func flush() {
        self.context?.flush()
    }

    /// Ends the exchange's response; with `closeConnection` the connection closes once it is out.
    ///
    /// The exchange is cleared before `.end` is written: writing it lets the pipelining handler
    /// deliver the next request at once, re-entrantly.
    func finishResponse(trailers: HTTPHeaders?, closeConnection: Bool) {
        guard let context else { return }
        self.exchange = nil
        let close = closeConnection
        context.triggerUserOutboundEvent(close ? ClientConnectionEvent.closing : .exchangeFinished, promise: nil)
        if close {
            self.closing = true
            context.writeAndFlush(self.wrapOutboundOut(.end(trailers))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        } else {
            context.writeAndFlush(self.wrapOutboundOut(.end(trailers)), promise: nil)
            self.resumeReadingIfNeeded()
        }
    }

    /// Writes a response the proxy makes itself and ends the exchange.
    ///
    /// - Parameter withBody: false for an answer to HEAD, which announces the body's length
    ///   but must not carry it (the client would read it as the next response).
    func respond(_ response: LocalResponse, version: HTTPVersion, withBody: Bool, closeConnection: Bool) {
        guard let context else { return }
        let keepAlive = !closeConnection
        context.write(self.wrapOutboundOut(.head(response.head(version: version, keepAlive: keepAlive))), promise: nil)
        if withBody {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(response.bodyBuffer(allocator: context.channel.allocator)))), promise: nil)
        }
        self.finishResponse(trailers: nil, closeConnection: !keepAlive)
    }

    /// Cuts the connection mid-response: the only honest signal once a status line is out.
    func cutConnection() {
        self.closing = true
        self.exchange = nil
        self.context?.close(promise: nil)
    }

    /// Hands the connection over to a byte tunnel after the app agreed to switch protocols.
    func startTunnel(response: HTTPResponseHead, upstream: UpstreamConnection) {
        guard let context else {
            upstream.close()
            return
        }
        self.exchange = nil
        context.writeAndFlush(self.wrapOutboundOut(.head(response)), promise: nil)
        do {
            try Tunnel.splice(client: context.channel, upstream: upstream.channel)
        } catch {
            context.close(promise: nil)
            upstream.close()
        }
    }

    private func abandonExchange() {
        if let exchange = self.exchange {
            self.exchange = nil
            exchange.clientWentAway()
        }
    }
}
