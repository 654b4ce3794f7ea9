import NIOCore
import NIOHTTP1

/// Writes requests to the app as HTTP/1.1 bytes, in place of NIO's `HTTPRequestEncoder`: the
/// head in one pass (see `HTTPWireFormat`), the body as it comes.
final class UpstreamRequestEncoder: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = IOData

    private var body = BodyFraming()

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch self.unwrapOutboundIn(data) {
        case .head(let head):
            var bytes = context.channel.allocator.buffer(capacity: 0)
            bytes.writeRequestHead(head)
            self.body.start(head.headers, version: head.version)
            context.write(self.wrapOutboundOut(.byteBuffer(bytes)), promise: promise)
        case .body(let part):
            self.body.write(part, context: context, promise: promise)
        case .end(let trailers):
            self.body.end(trailers: trailers, context: context, promise: promise)
        }
    }
}
