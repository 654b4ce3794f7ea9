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

    func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try self.decoder.decodeLast(context: context, buffer: &buffer, seenEOF: seenEOF)
    }
}
