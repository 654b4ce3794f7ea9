import NIOCore
import NIOHTTP1

/// A byte tunnel between a client and the app after a protocol switch (WebSocket).
enum Tunnel {
    /// Replaces the HTTP handlers of both channels with a pair of `TunnelHandler`s.
    ///
    /// The tunnel handlers go in first and the decoders come out last, so bytes that arrived
    /// behind the 101 (a WebSocket frame sent straight after the upgrade, say) are forwarded by
    /// the decoders as they leave instead of being lost. A decoder leaves on the next loop tick;
    /// once both are gone, the leftovers are flushed and both sides read on.
    static func splice(client: any Channel, upstream: any Channel) throws {
        let (clientSide, upstreamSide) = TunnelHandler.makePair()
        let clientPipeline = client.pipeline.syncOperations
        let upstreamPipeline = upstream.pipeline.syncOperations
        try clientPipeline.addHandler(clientSide)
        try upstreamPipeline.addHandler(upstreamSide)

        try clientPipeline.remove(DownstreamHandler.self)
        try clientPipeline.remove(ClientConnectionGuard.self)
        try upstreamPipeline.remove(UpstreamHandler.self)

        let upstreamDecoder = try upstreamPipeline.handler(type: ByteToMessageHandler<UpstreamResponseDecoder>.self)
        let clientDecoder = try clientPipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
        upstreamPipeline.removeHandler(upstreamDecoder)
            .assumeIsolated()
            .flatMap { client.pipeline.syncOperations.removeHandler(clientDecoder) }
            .whenComplete { result in
                guard case .success = result else {
                    client.close(promise: nil)
                    upstream.close(promise: nil)
                    return
                }
                client.flush()
                upstream.flush()
                client.read()
                upstream.read()
            }
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
/// when either side closes, so does the other.
final class TunnelHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: TunnelHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false

    private init() {}

    static func makePair() -> (TunnelHandler, TunnelHandler) {
        let first = TunnelHandler()
        let second = TunnelHandler()
        first.partner = second
        second.partner = first
        return (first, second)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.partner?.partnerWrite(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.partner?.partnerFlush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.partner?.partnerCloseAfterWrites()
        context.fireChannelInactive()
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

    private func partnerCloseAfterWrites() {
        guard let context = self.context else { return }
        context.writeAndFlush(self.wrapOutboundOut(context.channel.allocator.buffer(capacity: 0))).assumeIsolated()
            .whenComplete { _ in context.close(promise: nil) }
    }

    private func partnerBecameWritable() {
        if self.pendingRead, let context {
            self.pendingRead = false
            context.read()
        }
    }
}
