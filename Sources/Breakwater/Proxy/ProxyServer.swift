import Atomics
import Logging
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix

/// The public listener: accepts clients, builds each connection's pipeline, and owns one
/// upstream connection pool per event loop.
///
/// A client connection and every upstream connection it uses share an event loop, so a proxied
/// request never crosses threads.
public final class ProxyServer: Sendable {
    private let serverChannel: any Channel
    private let quiescing: ServerQuiescingHelper
    private let generation: CurrentGeneration
    private let lifecycle: Lifecycle
    private let pools: [ObjectIdentifier: NIOLoopBound<EventLoopContext>]
    private let connectionLimit: ConnectionLimit
    private let logger: Logger

    /// Where the listener is bound (with port 0 in the file, the port the system chose).
    public let localAddress: SocketAddress
    public var port: Int { self.localAddress.port ?? 0 }

    /// Client connections admitted and not yet closed (what `server.max_connections` counts).
    var clientConnections: Int { self.connectionLimit.count }

    private init(
        serverChannel: any Channel,
        quiescing: ServerQuiescingHelper,
        pools: [ObjectIdentifier: NIOLoopBound<EventLoopContext>],
        connectionLimit: ConnectionLimit,
        generation: CurrentGeneration,
        lifecycle: Lifecycle,
        logger: Logger
    ) {
        self.serverChannel = serverChannel
        self.localAddress = serverChannel.localAddress!
        self.quiescing = quiescing
        self.generation = generation
        self.lifecycle = lifecycle
        self.pools = pools
        self.connectionLimit = connectionLimit
        self.logger = logger
    }

    /// Binds `configuration.listen` and starts serving.
    ///
    /// - Parameter eventLoopGroup: the loops to serve on (`server.threads` of them in
    ///   production); the caller shuts it down after the server.
    public static func start(
        configuration: ProxyConfig,
        eventLoopGroup group: MultiThreadedEventLoopGroup,
        upstreams: UpstreamSet? = nil,
        lifecycle: Lifecycle,
        logger: Logger
    ) async throws -> ProxyServer {
        let upstreams = try upstreams ?? configuration.upstream.map { try UpstreamSet(addresses: [$0], supervised: false) }
        guard let upstreams else {
            throw ProxyServerError.noUpstream
        }
        var pools: [ObjectIdentifier: NIOLoopBound<EventLoopContext>] = [:]
        for eventLoop in group.makeIterator() {
            pools[ObjectIdentifier(eventLoop)] = try await eventLoop.submit {
                NIOLoopBound(
                    EventLoopContext(eventLoop: eventLoop, upstreams: upstreams, configuration: configuration.upstreamPool),
                    eventLoop: eventLoop
                )
            }.get()
        }
        let sharedPools = pools

        let generation = CurrentGeneration(ProxyShared(configuration: configuration, lifecycle: lifecycle, logger: logger))
        let quiescing = ServerQuiescingHelper(group: group)
        let descriptors = DescriptorLimit.current
        let maxConnections = DescriptorLimit.maxConnections(configured: configuration.server.maxConnections, descriptors: descriptors)
        if !DescriptorLimit.fits(maxConnections, in: descriptors) {
            logger.warning(
                "server.max_connections may exceed the file-descriptor limit: beyond it, accepting pauses until descriptors free up",
                metadata: ["max_connections": "\(maxConnections)", "descriptor_limit": "\(descriptors)"]
            )
        }
        let connectionLimit = ConnectionLimit(maximum: maxConnections)
        let serverConfig = configuration.server

        let serverChannel = try await ListenError.naming("listen", configuration.listen) {
            try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 1024)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .serverChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                    }
                }
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    guard connectionLimit.admit(channel) else {
                        return channel.close()
                    }
                    return channel.eventLoop.makeCompletedFuture {
                        let loop = sharedPools[ObjectIdentifier(channel.eventLoop)]!.value
                        try channel.pipeline.syncOperations.addClientHandlers(generation: generation, server: serverConfig, loop: loop)
                    }
                }
                .bind(host: configuration.listen.host, port: configuration.listen.port)
                .get()
        }
        return ProxyServer(
            serverChannel: serverChannel,
            quiescing: quiescing,
            pools: pools,
            connectionLimit: connectionLimit,
            generation: generation,
            lifecycle: lifecycle,
            logger: logger
        )
    }

    /// Routes, limits and policies for new requests, from a reloaded configuration
    /// (`ProxyConfig.reloaded(with:)`: what only a restart can change is as it runs).
    public func reload(configuration: ProxyConfig) {
        let previous = self.generation.value
        self.generation.value = ProxyShared(configuration: configuration, lifecycle: self.lifecycle, logger: self.logger, previous: previous)
    }

    /// The routes new requests see, with their live policy state (for the admin listener).
    var routes: [Route] { self.generation.value.routes }

    /// Stops accepting, lets requests in flight finish for up to `gracePeriod` (keep-alive
    /// connections close as their current response ends, idle ones at once), then returns.
    ///
    /// - Returns: the requests still in flight when the grace period ended; closing the event
    ///   loops cuts them.
    @discardableResult
    public func shutdown(gracePeriod: Duration = .seconds(5)) async throws -> Int {
        self.lifecycle.advance(to: .stopping)
        let eventLoop = self.serverChannel.eventLoop
        let drained = eventLoop.makePromise(of: Void.self)
        self.quiescing.initiateShutdown(promise: drained)
        let timeout = eventLoop.scheduleTask(in: TimeAmount(gracePeriod)) {
            drained.fail(ProxyServerError.drainTimedOut)
        }
        var cut = 0
        do {
            try await drained.futureResult.get()
        } catch {
            cut = self.lifecycle.requestsInFlight.load(ordering: .relaxed)
        }
        timeout.cancel()
        for (_, pool) in self.pools {
            try await pool.eventLoop.submit { pool.value.shutdown() }.get()
        }
        return cut
    }
}

public enum ProxyServerError: Error, CustomStringConvertible {
    case noUpstream
    case drainTimedOut

    public var description: String {
        switch self {
        case .noUpstream: "no upstream: set `upstream` in the configuration"
        case .drainTimedOut: "connections were still open when the grace period ended"
        }
    }
}

extension ChannelPipeline.SynchronousOperations {
    /// A client connection's pipeline, from the socket inwards.
    ///
    /// Built by hand rather than with `configureHTTPServerPipeline`: the guard must see raw
    /// bytes, `DownstreamHandler` parses requests itself (`HTTPParser`) and answers protocol
    /// errors with SPEC's JSON bodies, and it orders pipelined requests itself (see there why).
    func addClientHandlers(generation: CurrentGeneration, server: ServerConfig, loop: EventLoopContext) throws {
        let connectionGuard = ClientConnectionGuard(configuration: server, clock: loop.clock) { reason, client, duration in
            generation.value.recordUnreadRequest(reason, client: client, duration: duration, loop: loop)
        }
        try self.addHandlers([
            connectionGuard,
            DownstreamHandler(
                generation: generation,
                loop: loop,
                connectionGuard: connectionGuard,
                limits: .proxyLimits(maxHeadBytes: server.maxHeaderBytes)
            ),
        ])
    }
}

extension UpstreamAddress {
    /// Resolved once at startup: the data path never waits on DNS.
    func resolve() throws -> SocketAddress {
        switch self {
        case .tcp(let hostPort): try SocketAddress.makeAddressResolvingHost(hostPort.host, port: hostPort.port)
        case .unix(let path): try SocketAddress(unixDomainSocketPath: path)
        }
    }
}
