import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// The admin listener on `admin.listen`, apart from the public one: health, breakers, metrics
/// and the token-guarded admin actions. It runs on an event loop of its own, so an overloaded
/// proxy still answers its health checks, and it stops last, after the drain.
public struct AdminService: Service {
    private let configuration: AdminConfig
    private let lifecycle: Lifecycle
    private let routes: @Sendable () -> [Route]
    private let logger: Logger
    private let bound: (@Sendable (Int) -> Void)?

    /// - Parameters:
    ///   - proxy: where the current routes come from.
    ///   - bound: told the port once listening (for tests that bind port 0).
    public init(
        configuration: AdminConfig,
        lifecycle: Lifecycle,
        proxy: ProxyService,
        logger: Logger,
        bound: (@Sendable (Int) -> Void)? = nil
    ) {
        self.init(configuration: configuration, lifecycle: lifecycle, routes: { proxy.routes }, logger: logger, bound: bound)
    }

    init(
        configuration: AdminConfig,
        lifecycle: Lifecycle,
        routes: @escaping @Sendable () -> [Route],
        logger: Logger,
        bound: (@Sendable (Int) -> Void)? = nil
    ) {
        self.configuration = configuration
        self.lifecycle = lifecycle
        self.routes = routes
        self.logger = logger
        self.bound = bound
    }

    public func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            let channel = try await self.bind(on: group)
            self.bound?(channel.localAddress?.port ?? 0)
            self.logger.info("admin listening", metadata: ["listen": "\(self.configuration.listen.host):\(channel.localAddress?.port ?? 0)"])
            try? await gracefulShutdown()
            try? await channel.close()
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        try await group.shutdownGracefully()
    }

    func bind(on group: any EventLoopGroup) async throws -> any Channel {
        let endpoints = AdminEndpoints(lifecycle: self.lifecycle, routes: self.routes, tokenEnv: self.configuration.tokenEnv)
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(endpoints: endpoints))
                }
            }
            .bind(host: self.configuration.listen.host, port: self.configuration.listen.port)
            .get()
    }
}

/// Reads a request, hands it to `AdminEndpoints`, writes the answer.
private final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let endpoints: AdminEndpoints
    private var head: HTTPRequestHead?

    init(endpoints: AdminEndpoints) {
        self.endpoints = endpoints
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break  // no endpoint reads a body
        case .end:
            guard let head = self.head else { return }
            self.head = nil
            // Made on NIO's thread pool, not here: `/metrics` reads the process's figures from
            // /proc, which is file I/O, and no event loop waits on a file. The HTTP server
            // pipeline holds a pipelined request back until this answer's end is written.
            let endpoints = self.endpoints
            NIOThreadPool.singleton.runIfActive(eventLoop: context.eventLoop) { endpoints.answer(head) }
                .assumeIsolated()
                .whenComplete { result in
                    guard context.channel.isActive else { return }  // the client left meanwhile
                    switch result {
                    case .success(let answer): self.write(answer, to: head, context: context)
                    case .failure: context.close(promise: nil)
                    }
                }
        }
    }

    private func write(_ answer: AdminEndpoints.Answer, to head: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: answer.contentType)
        headers.add(name: "content-length", value: String(answer.body.utf8.count))
        headers.add(name: "cache-control", value: "no-store")
        if !head.isKeepAlive { headers.add(name: "connection", value: "close") }
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: answer.status, headers: headers))), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: answer.body)))), promise: nil)
        let keepAlive = head.isKeepAlive
        context.writeAndFlush(self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
    }
}
