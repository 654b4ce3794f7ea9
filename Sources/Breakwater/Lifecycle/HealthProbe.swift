import NIOCore
import NIOHTTP1
import NIOPosix

/// One health check of the app: `GET path` on a fresh connection; healthy on a 2xx head
/// within `timeout`. A fresh connection each time, so the probe also proves the app accepts.
enum HealthProbe {
    static func check(target: SocketAddress, path: String, timeout: Duration, eventLoop: any EventLoop) async -> Bool {
        let status = eventLoop.makePromise(of: HTTPResponseStatus.self)
        let deadline = eventLoop.scheduleTask(in: TimeAmount(timeout)) {
            status.fail(ChannelError.connectTimeout(TimeAmount(timeout)))
        }
        let channel = ClientBootstrap(group: eventLoop)
            .connectTimeout(TimeAmount(timeout))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ProbeResponseHandler(status: status))
                }
            }
            .connect(to: target)
        channel.whenSuccess { channel in
            var headers = HTTPHeaders()
            headers.add(name: "host", value: "localhost")
            headers.add(name: "user-agent", value: "breakwater-readiness")
            headers.add(name: "connection", value: "close")
            channel.write(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)), promise: nil)
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        }
        channel.whenFailure { status.fail($0) }
        let result = try? await status.futureResult.get()
        deadline.cancel()
        if let channel = try? await channel.get() {
            try? await channel.close()
        }
        return result.map { (200..<300).contains($0.code) } ?? false
    }
}

extension HealthProbe {
    /// Whether the app accepts a TCP connection: readiness for apps without a health path.
    static func accepts(target: SocketAddress, timeout: Duration, eventLoop: any EventLoop) async -> Bool {
        guard let channel = try? await ClientBootstrap(group: eventLoop).connectTimeout(TimeAmount(timeout)).connect(to: target).get() else {
            return false
        }
        try? await channel.close()
        return true
    }
}

private final class ProbeResponseHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let status: EventLoopPromise<HTTPResponseStatus>

    init(status: EventLoopPromise<HTTPResponseStatus>) {
        self.status = status
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = self.unwrapInboundIn(data) {
            self.status.succeed(head.status)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.status.fail(ChannelError.eof)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.status.fail(error)
        context.close(promise: nil)
    }
}
