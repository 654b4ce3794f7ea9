import NIOCore
import NIOHTTP1

/// Writes the answers to a client as HTTP/1.1 bytes, in place of NIO's `HTTPResponseEncoder`:
/// the head in one pass (see `HTTPWireFormat`), the body as it comes.
///
/// A value that `DownstreamHandler` writes through, not a handler of its own: as a handler it
/// was one more stop for every write, flush and read of every request, and each response part
/// was boxed in `NIOAny` on the way in and cast back out, a dynamic cast per part. (The app side
/// keeps its encoder a handler, `UpstreamRequestEncoder`: NIO's response decoder sits between
/// and must see each request head go by.)
struct ClientResponseEncoder {
    private var body = BodyFraming()

    mutating func write(_ part: HTTPServerResponsePart, context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        switch part {
        case .head(let head):
            var bytes = context.channel.allocator.buffer(capacity: 0)
            bytes.writeResponseHead(head)
            self.body.start(head.headers, version: head.version)
            context.write(NIOAny(IOData.byteBuffer(bytes)), promise: promise)
        case .body(let part):
            self.body.write(part, context: context, promise: promise)
        case .end(let trailers):
            self.body.end(trailers: trailers, context: context, promise: promise)
        }
    }
}
