import NIOCore
import NIOHTTP1

/// Writes requests to the app as HTTP/1.1 bytes (`HTTPMessageEncoder`), in place of NIO's
/// `HTTPRequestEncoder`.
///
/// A handler, where the client side's encoder is a value `DownstreamHandler` writes through:
/// NIO's response decoder sits between `UpstreamHandler` and the socket and must see each
/// request head go by, to know which responses have no body.
final class UpstreamRequestEncoder: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = IOData

    private var encoder = HTTPMessageEncoder()

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        self.encoder.write(self.unwrapOutboundIn(data), context: context, promise: promise)
    }
}
