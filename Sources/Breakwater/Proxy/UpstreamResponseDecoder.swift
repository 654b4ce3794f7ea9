import NIOCore
import NIOHTTP1

/// NIO's HTTP/1 response decoder, told each request's method by `UpstreamHandler` rather than
/// watching the writes to the app go by.
///
/// The decoder must know which requests were `HEAD`s: their responses announce a length but
/// carry no body. NIO's `HTTPResponseDecoder` learns that as a write-observing decoder, which
/// puts its `ByteToMessageHandler` in the path of every write and flush to the app: a dynamic
/// cast and a pass through unspecialised generic code for each part of each request. Wrapped,
/// the handler is inbound-only, and `UpstreamHandler` writes encoded bytes straight to the
/// socket. The parsing is NIO's, unchanged.
struct UpstreamResponseDecoder: ByteToMessageDecoder {
    typealias InboundOut = HTTPClientResponsePart

    /// A class: `UpstreamHandler` holds the same decoder to tell it of requests. Bytes after a
    /// `101` are forwarded (for tunnels) and other 1xx answers dropped: the proxy does not relay
    /// them.
    let decoder = HTTPResponseDecoder(
        leftOverBytesStrategy: .forwardBytes,
        informationalResponseStrategy: .drop,
        limitConfiguration: .proxyLimits
    )

    /// Called as a request head goes out, before its response can arrive.
    func requestSent(method: HTTPMethod) {
        // The decoder reads nothing of the head but its method, for HEAD and CONNECT (which
        // never reaches the app); so no head is made per request for it.
        self.decoder.write(data: .head(method == .HEAD ? Self.headRequest : Self.otherRequest))
    }

    private static let headRequest = HTTPRequestHead(version: .http1_1, method: .HEAD, uri: "")
    private static let otherRequest = HTTPRequestHead(version: .http1_1, method: .GET, uri: "")

    func decoderAdded(context: ChannelHandlerContext) {
        self.decoder.decoderAdded(context: context)
    }

    func decoderRemoved(context: ChannelHandlerContext) {
        self.decoder.decoderRemoved(context: context)
    }

    func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        try self.decoder.decode(context: context, buffer: &buffer)
    }

    /// Bytes left at the app's close follow a 101 (before one, the decoder takes every byte or
    /// throws). NIO's decoder forwards them when it is removed, for the tunnel, but drops them
    /// at EOF; an app that agrees, speaks and closes in one go would lose its last words. So
    /// they are forwarded here too: as a body part to the exchange while it has the connection
    /// (`ProxyExchange.keepBytesBehindSwitch`), as bytes to the tunnel once the splice began.
    func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        let state = try self.decoder.decodeLast(context: context, buffer: &buffer, seenEOF: seenEOF)
        if seenEOF, let said = buffer.readSlice(length: buffer.readableBytes), said.readableBytes > 0 {
            let spliced = (try? context.pipeline.syncOperations.handler(type: UpstreamHandler.self)) == nil
            context.fireChannelRead(spliced ? NIOAny(said) : self.wrapInboundOut(.body(said)))
        }
        return state
    }
}
