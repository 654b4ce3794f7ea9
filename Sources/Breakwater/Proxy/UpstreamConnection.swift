import NIOCore
import NIOHTTP1

/// What an upstream connection tells the exchange that leased it.
protocol UpstreamConnectionDelegate: AnyObject {
    /// Whether the connection may read more of the response now: false while the client is
    /// not writable, which is how a slow client slows the app down instead of filling memory.
    var wantsUpstreamReads: Bool { get }
    func upstreamReceived(_ part: ResponsePart)
    func upstreamReadComplete()
    func upstreamWritabilityChanged(isWritable: Bool)
    /// The connection closed or failed; `nil` is a clean close by the app.
    func upstreamClosed(error: (any Error)?)
}

/// One keep-alive HTTP/1.1 connection to the app, leased to one exchange at a time.
///
/// Lives on its pool's event loop, which is also the event loop of every client connection that
/// leases it: the two sides of a proxied request share a thread and need no locks.
final class UpstreamConnection {
    let channel: any Channel
    fileprivate let handler: UpstreamHandler
    /// Requests this connection has carried; a reused connection may have been closed by the
    /// app's keep-alive timeout just as we sent on it.
    var requestsServed = 0

    init(channel: any Channel, handler: UpstreamHandler) {
        self.channel = channel
        self.handler = handler
    }

    var isActive: Bool { self.handler.isActive }
    var isWritable: Bool { self.channel.isWritable }
    /// A response part is being handed to the exchange: what follows it in the same read is
    /// yet to be decoded (`UpstreamConnectionPool.takeIdle`).
    var isHandingOverAPart: Bool { self.handler.isHandingOverAPart }

    var delegate: (any UpstreamConnectionDelegate)? {
        get { self.handler.delegate }
        set { self.handler.delegate = newValue }
    }

    /// Sends a request's head; the response parser is told its method first, since the answer
    /// to a `HEAD` announces a body it does not carry.
    func writeHead(_ head: EncodedHead, method: HTTPMethod) {
        self.handler.write(.head(head), method: method)
    }

    func writeBody(_ body: ByteBuffer) {
        self.handler.write(.body(.byteBuffer(body)))
    }

    /// Ends the request (a client's trailers are not passed on).
    func writeEnd() {
        self.handler.write(.end(nil))
    }

    func flush() {
        self.handler.flush()
    }

    /// Re-evaluates backpressure after the delegate's `wantsUpstreamReads` turned true.
    func resumeReadingIfNeeded() {
        self.handler.resumeReadingIfNeeded()
    }

    /// Closes without ceremony: used for connections that can no longer be trusted.
    func close() {
        self.delegate = nil
        self.channel.close(promise: nil)
    }

    /// The pool the connection is parked in, while it idles there: told if the app closes it.
    /// Set and cleared by the pool (a reference cycle while parked, broken whenever the
    /// connection leaves the idle list); a closure here would be allocated at every park.
    var parkedIn: UpstreamConnectionPool? {
        get { self.handler.parkedIn }
        set { self.handler.parkedIn = newValue }
    }
}

/// The channel handler behind `UpstreamConnection`: writes requests as HTTP/1.1 bytes
/// (`HTTPMessageEncoder`, as `DownstreamHandler` writes responses), parses responses
/// (`HTTPParser`) and hands their parts to the delegate, and holds reads while the delegate's
/// client cannot take more.
final class UpstreamHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// The exchange leasing the connection; nil while it idles in the pool. A read held for the
    /// last one's slow client is re-decided for the next: an idle connection always reads, so
    /// that the app's close (or stray bytes) is seen at once.
    fileprivate var delegate: (any UpstreamConnectionDelegate)? {
        didSet {
            self.countLease(self.delegate != nil)
            self.resumeReadingIfNeeded()
        }
    }
    fileprivate var parkedIn: UpstreamConnectionPool?
    fileprivate private(set) var isActive = false
    fileprivate private(set) var isHandingOverAPart = false
    private var context: ChannelHandlerContext?
    private var readHeld = false
    /// Bytes were written since the last flush. The exchange flushes a request where its head
    /// goes out, at its end and when the client's read completes, which for a request without
    /// a body is one read: NIO walks its whole write path for a flush, pending bytes or not,
    /// so only a flush with something to send goes to it.
    private var hasUnflushedWrites = false
    /// The flush waits for the end of the loop's turn (`UpstreamFlushBatch`), and takes every
    /// write made before it.
    private var isFlushHeld = false
    private let flushes: UpstreamFlushBatch
    /// Counted in `flushes.leased`: a delegate is set, or was when the handler was removed.
    private var isCountedAsLeased = false
    private var encoder = HTTPMessageEncoder()
    private let clock: EventClock
    /// A response's head may be up to 80 KB, NIO's default. Past a 101, it keeps what the app
    /// says until the tunnel opens (or, if the app closes first, for the client).
    private let parser = HTTPParser(kind: .response, limits: .proxyLimits(maxHeadBytes: 80 * 1024))

    init(clock: EventClock, flushes: UpstreamFlushBatch) {
        self.clock = clock
        self.flushes = flushes
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.isActive = context.channel.isActive
        self.parser.delegate = self
    }

    /// Bytes the app sent behind its 101 go on to the tunnel, which is in place behind this
    /// handler when the splice removes it.
    func handlerRemoved(context: ChannelHandlerContext) {
        if let said = self.parser.takeBytesAfterSwitch() {
            context.fireChannelRead(self.wrapInboundOut(said))
        }
        self.parser.delegate = nil
        self.context = nil
        self.countLease(false)  // a tunnel's connection leaves the pool's world still leased
    }

    func channelActive(context: ChannelHandlerContext) {
        self.isActive = true
        context.fireChannelActive()
    }

    /// The app's close ends a response framed by it, or cuts one short (reported as the
    /// parser's `invalidEOFState`). Bytes it sent behind a 101 before closing are the client's:
    /// they go to the exchange as body while it still holds the connection
    /// (`ProxyExchange.keepBytesBehindSwitch`).
    func channelInactive(context: ChannelHandlerContext) {
        self.isActive = false
        if let said = self.parser.takeBytesAfterSwitch() {
            self.delegate?.upstreamReceived(.body(said))
        }
        do {
            try self.handingOverParts { try self.parser.finish() }
        } catch {
            self.reportClosed(error: error)
        }
        self.reportClosed(error: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.isActive = false
        self.reportClosed(error: error)
        context.close(promise: nil)
    }

    /// An event of the loop's `clock`: the answer's parts are handled at one time.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.clock.during { self.received(self.unwrapInboundIn(data), context: context) }
    }

    private func received(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        guard self.delegate != nil || self.parser.hasSwitched else {
            self.closeOnStrayBytes(context: context)
            return
        }
        do {
            switch try self.handingOverParts({ try self.parser.parse(bytes) }) {
            case .needMoreBytes, .messageEnded(rest: nil), .switched, .dropped:
                break
            case .messageEnded(rest: .some):
                // More after a whole answer, to a request that had one: nobody asked.
                self.closeOnStrayBytes(context: context)
            }
        } catch {
            self.errorCaught(context: context, error: error)
        }
    }

    /// Runs `body`, during which response parts are handed to the exchange: what follows a
    /// part in the same read is yet to be parsed (`UpstreamConnectionPool.takeIdle`).
    private func handingOverParts<Result>(_ body: () throws -> Result) rethrows -> Result {
        self.isHandingOverAPart = true
        defer { self.isHandingOverAPart = false }
        return try body()
    }

    /// Bytes from the app while nobody asked: the connection's framing can no longer be
    /// trusted, so it must never carry another request.
    private func closeOnStrayBytes(context: ChannelHandlerContext) {
        self.isActive = false
        context.close(promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.delegate?.upstreamReadComplete()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        self.delegate?.upstreamWritabilityChanged(isWritable: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if let delegate, !delegate.wantsUpstreamReads {
            self.readHeld = true
        } else {
            context.read()
        }
    }

    fileprivate func resumeReadingIfNeeded() {
        guard self.readHeld, let context else { return }
        if let delegate, !delegate.wantsUpstreamReads { return }
        self.readHeld = false
        context.read()
    }

    fileprivate func write(_ part: OutgoingHTTPPart, method: HTTPMethod? = nil) {
        guard let context else { return }
        if let method {
            self.parser.expectResponse(to: method)
        }
        if self.encoder.write(part, context: context, promise: nil) {
            self.hasUnflushedWrites = true
        }
    }

    fileprivate func flush() {
        guard self.hasUnflushedWrites, let context else { return }
        self.hasUnflushedWrites = false
        if self.isFlushHeld {
            return
        }
        if self.flushes.holdsFlush(of: self) {
            self.isFlushHeld = true
        } else {
            context.flush()
        }
    }

    /// The end of the turn, for a flush `UpstreamFlushBatch` held.
    func flushHeldWrites() {
        self.isFlushHeld = false
        self.context?.flush()
    }

    private func countLease(_ isLeased: Bool) {
        guard isLeased != self.isCountedAsLeased else { return }
        self.isCountedAsLeased = isLeased
        self.flushes.countLease(started: isLeased)
    }

    private func reportClosed(error: (any Error)?) {
        if let delegate = self.delegate {
            self.delegate = nil
            delegate.upstreamClosed(error: error)
        } else if let pool = self.parkedIn {
            self.parkedIn = nil
            pool.parkedConnectionClosed()
        }
    }
}

extension UpstreamHandler: HTTPParserDelegate {
    func parsedHead(_ head: HTTPParser.Head) {
        guard case .response(let response) = head else { preconditionFailure("a response parser read a request") }
        self.delegate?.upstreamReceived(.head(response))
    }

    func parsedBody(_ body: ByteBuffer) {
        self.delegate?.upstreamReceived(.body(body))
    }

    func parsedEnd(trailers: HTTPHeaders?) {
        self.delegate?.upstreamReceived(.end(trailers))
    }
}

