import NIOCore
import NIOHTTP1

/// A byte tunnel between a client and the app after a protocol switch (WebSocket).
enum Tunnel {
    /// Replaces the HTTP handlers of both channels with a pair of `TunnelHandler`s.
    ///
    /// The tunnel handlers go in first and the HTTP handlers come out after, so bytes that
    /// arrived behind the upgrade request and the 101 (a WebSocket frame sent straight after
    /// them, say) are forwarded by the handlers as they leave instead of being lost; then the
    /// leftovers are flushed and both sides read on.
    ///
    /// - Parameters:
    ///   - writeTimeout: how long a side may take to accept the last bytes once its partner
    ///     closed, before it is closed regardless; and how long the tunnel may carry nothing
    ///     either way before both sides close (`server.idle_timeout`).
    ///   - draining: a drain began while the app was agreeing: the tunnel closes as soon as
    ///     it is open, as every open tunnel does when a drain begins.
    static func splice(client: any Channel, upstream: any Channel, writeTimeout: TimeAmount, draining: Bool) throws {
        let (clientSide, upstreamSide) = TunnelHandler.makePair(writeTimeout: writeTimeout, eventLoop: client.eventLoop)
        let clientPipeline = client.pipeline.syncOperations
        let upstreamPipeline = upstream.pipeline.syncOperations
        try clientPipeline.addHandler(clientSide)
        try upstreamPipeline.addHandler(upstreamSide)

        try clientPipeline.remove(ClientConnectionGuard.self)
        try clientPipeline.remove(DownstreamHandler.self)
        try upstreamPipeline.remove(UpstreamHandler.self)
        client.flush()
        upstream.flush()
        if draining {
            clientSide.closeAfterWrites()
            return
        }
        client.read()
        upstream.read()
    }
}

extension ChannelPipeline.SynchronousOperations {
    fileprivate func remove<Handler: RemovableChannelHandler>(_ type: Handler.Type) throws {
        let handler = try self.handler(type: type)
        self.removeHandler(handler, promise: nil)
    }
}

/// One end of a tunnel: what its channel reads, the partner's channel writes.
///
/// The glue pattern of swift-nio-ssh's example server: a read is deferred while the partner
/// cannot write, so a fast sender is held back by a slow receiver instead of filling memory;
/// when either side closes, so does the other, once it has taken what the closed side sent
/// (or after `writeTimeout`, so that a peer that stopped reading cannot hold it open).
///
/// A drain closes the tunnel when it begins: a tunnel has no request boundary to finish at,
/// and waiting for one would hold every drain to its timeout. Its client reconnects, to a
/// proxy that is not stopping.
///
/// A tunnel that carries nothing either way for `writeTimeout` (`server.idle_timeout`) closes
/// too: a peer gone without a FIN or a reset (a phone that went offline, a NAT that forgot the
/// flow) would otherwise hold two sockets and a connection slot for ever. nginx's
/// `proxy_read_timeout` and HAProxy's `timeout tunnel` do the same; WebSocket servers ping
/// well within it (uvicorn every 20 s).
final class TunnelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: TunnelHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private let writeTimeout: TimeAmount
    /// The pair's idle deadline, pushed back by every read on either side. Both ends hold it,
    /// and it holds both: each lets go in `handlerRemoved`, which breaks the cycle.
    private var idle: MovableDeadline?

    private init(writeTimeout: TimeAmount) {
        self.writeTimeout = writeTimeout
    }

    /// Both ends on `eventLoop`: the app's connection lives on its client's loop.
    static func makePair(writeTimeout: TimeAmount, eventLoop: any EventLoop) -> (TunnelHandler, TunnelHandler) {
        let first = TunnelHandler(writeTimeout: writeTimeout)
        let second = TunnelHandler(writeTimeout: writeTimeout)
        first.partner = second
        second.partner = first
        let idle = MovableDeadline(eventLoop: eventLoop) {
            first.context?.close(promise: nil)
            second.context?.close(promise: nil)
        }
        idle.set(in: writeTimeout)
        (first.idle, second.idle) = (idle, idle)
        return (first, second)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.idle?.cancel()
        self.idle = nil
        self.context = nil
        self.partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.idle?.set(in: self.writeTimeout)
        self.partner?.partnerWrite(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.partner?.partnerFlush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.partner?.closeAfterWrites()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            self.closeAfterWrites()  // the partner follows when this side is inactive
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            self.partner?.partnerBecameWritable()
        }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if let partner = self.partner, partner.isWritable {
            context.read()
        } else {
            self.pendingRead = true
        }
    }

    private var isWritable: Bool { self.context?.channel.isWritable ?? false }

    private func partnerWrite(_ data: NIOAny) {
        self.context?.write(data, promise: nil)
    }

    private func partnerFlush() {
        self.context?.flush()
    }

    /// Closes this side once the bytes written to it are out, or after `writeTimeout`.
    func closeAfterWrites() {
        guard let context = self.context else { return }
        let channel = context.channel
        let stalled = channel.eventLoop.assumeIsolated().scheduleTask(in: self.writeTimeout) { channel.close(promise: nil) }
        context.writeAndFlush(self.wrapOutboundOut(channel.allocator.buffer(capacity: 0))).assumeIsolated()
            .whenComplete { _ in
                stalled.cancel()
                channel.close(promise: nil)
            }
    }

    private func partnerBecameWritable() {
        if self.pendingRead, let context {
            self.pendingRead = false
            context.read()
        }
    }
}
