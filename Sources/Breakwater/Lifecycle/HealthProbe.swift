import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// One health check of the app: `GET path` on a fresh connection, with `Host: localhost`;
/// healthy on a 2xx head within `timeout` (SPEC's rule: a redirect or a 4xx is not healthy).
/// A fresh connection each time, so the probe also proves the app accepts.
enum HealthProbe {
    enum Verdict: Equatable {
        case healthy
        /// The app answered, but not with a 2xx: its health path, its allowed hosts or its
        /// redirects disagree with the probe, which no amount of waiting mends.
        case answered(status: Int)
        /// No answer: refused (an app still starting), reset, or silent past `timeout`.
        case noAnswer

        var isHealthy: Bool { self == .healthy }
    }

    static func check(target: SocketAddress, path: String, timeout: Duration, eventLoop: any EventLoop) async -> Verdict {
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
        guard let result else { return .noAnswer }
        return (200..<300).contains(result.code) ? .healthy : .answered(status: Int(result.code))
    }

    /// Logs a probe the app answered with something other than a 2xx, once per status in a
    /// row: otherwise an app that answers its probe 400 (a Host check) or 301 (a trailing
    /// slash) holds every request for `readiness.hold` and then refuses it, with nothing in
    /// the log to say why.
    static func log(_ verdict: Verdict, path: String, lastLogged: inout Int?, logger: Logger) {
        guard case .answered(let status) = verdict else {
            if verdict.isHealthy { lastLogged = nil }
            return
        }
        guard status != lastLogged else { return }
        lastLogged = status
        logger.warning(
            "readiness probe answered \(status), not 2xx",
            metadata: ["probe": "GET \(path)", "host": "localhost"]
        )
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
