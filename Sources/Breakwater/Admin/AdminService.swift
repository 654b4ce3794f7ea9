import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle

/// The admin listener on `admin.listen`, apart from the public one: health, breakers, metrics
/// and the token-guarded admin actions. It runs on an event loop of its own, so an overloaded
/// proxy still answers its health checks, and it stops last, after the drain.
public struct AdminService: Service {
    /// The admin listener's cap on open connections: a scraper, a health checker and a person
    /// need a handful; the cap keeps a flood of them from taking the file descriptors the
    /// proxy needs for its clients and the app.
    static let maxConnections = 64

    private let configuration: AdminConfig
    /// The proxy's `[server]` limits on reading a request, which the admin listener keeps too.
    private let server: ServerConfig
    private let lifecycle: Lifecycle
    private let routes: @Sendable () -> [Route]
    private let logger: Logger
    private let bound: (@Sendable (Int) -> Void)?

    /// - Parameters:
    ///   - proxy: where the current routes come from.
    ///   - bound: told the port once listening (for tests that bind port 0).
    public init(
        configuration: AdminConfig,
        server: ServerConfig,
        lifecycle: Lifecycle,
        proxy: ProxyService,
        logger: Logger,
        bound: (@Sendable (Int) -> Void)? = nil
    ) {
        self.init(configuration: configuration, server: server, lifecycle: lifecycle, routes: { proxy.routes }, logger: logger, bound: bound)
    }

    init(
        configuration: AdminConfig,
        server: ServerConfig,
        lifecycle: Lifecycle,
        routes: @escaping @Sendable () -> [Route],
        logger: Logger,
        bound: (@Sendable (Int) -> Void)? = nil
    ) {
        self.configuration = configuration
        self.server = server
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
        let server = self.server
        let connectionLimit = ConnectionLimit(maximum: Self.maxConnections)
        return try await ListenError.naming("admin.listen", self.configuration.listen) {
            try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    guard connectionLimit.admit(channel) else {
                        return channel.close()
                    }
                    return channel.eventLoop.makeCompletedFuture {
                        // The proxy's guard: a head within `header_read_timeout` and
                        // `max_header_bytes`, a kept-alive connection closed after `idle_timeout`.
                        // Its refusals are the admin listener's own, not the proxy's traffic.
                        let connectionGuard = ClientConnectionGuard(configuration: server, clock: EventClock(), recordRefusal: { _, _, _ in nil })
                        let pipeline = channel.pipeline.syncOperations
                        try pipeline.addHandler(ReadsOnlyWhileWritable())
                        try pipeline.addHandler(connectionGuard)
                        try pipeline.configureHTTPServerPipeline(withErrorHandling: true)
                        try pipeline.addHandler(AdminHandler(endpoints: endpoints, connectionGuard: connectionGuard))
                    }
                }
                .bind(host: self.configuration.listen.host, port: self.configuration.listen.port)
                .get()
        }
    }
}

/// Reads a request, hands it to `AdminEndpoints`, writes the answer.
private final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let endpoints: AdminEndpoints
    private let connectionGuard: ClientConnectionGuard
    private var head: HTTPRequestHead?

    init(endpoints: AdminEndpoints, connectionGuard: ClientConnectionGuard) {
        self.endpoints = endpoints
        self.connectionGuard = connectionGuard
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.connectionGuard.note(.requestHeadReceived)
            self.head = head
        case .body:
            break  // no endpoint reads a body
        case .end:
            self.connectionGuard.note(.requestEnded)
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
        if let allow = answer.allow { headers.add(name: "allow", value: allow) }
        if !head.isKeepAlive { headers.add(name: "connection", value: "close") }
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: answer.status, headers: headers))), promise: nil)
        if head.method != .HEAD {
            // An answer to HEAD names its length and sends nothing: NIO's encoder would write
            // the body, and a kept-alive client would read it as the next answer.
            context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: answer.body)))), promise: nil)
        }
        let keepAlive = head.isKeepAlive
        self.connectionGuard.note(keepAlive ? .exchangeFinished : .closing)
        context.writeAndFlush(self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            if !keepAlive { context.close(promise: nil) }
        }
    }
}

/// Holds reads while the connection cannot take more output. NIO's HTTP server pipeline reads
/// the next pipelined request as soon as an answer's end is written, taken or not; first in
/// the pipeline, this sees every read, so a client that pipelines requests and reads none of
/// the answers stops being read instead of having answers pile up in memory.
private final class ReadsOnlyWhileWritable: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    private var readHeld = false

    func read(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            context.read()
        } else {
            self.readHeld = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable && self.readHeld {
            self.readHeld = false
            context.read()
        }
        context.fireChannelWritabilityChanged()
    }
}
