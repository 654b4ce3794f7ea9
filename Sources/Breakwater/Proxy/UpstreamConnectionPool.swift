import NIOCore
import NIOHTTP1
import NIOPosix

/// Keep-alive connections to the app, one pool per event loop.
///
/// Everything here runs on `eventLoop`, so there is no lock: a client connection asks the pool of
/// its own event loop. Idle connections are kept most-recently-used first (the warmest socket is
/// reused, the coldest ages out), up to `maxIdle`, past which the coldest is closed; one sweep
/// per pool, not one timer per connection, closes those idle longer than `idleTimeout`, and a
/// connection is never handed out past it either: the sweep runs only every quarter of it, and
/// `idleTimeout` is set below the app's own keep-alive timeout precisely so that no request
/// goes out on a connection the app is closing.
final class UpstreamConnectionPool {
    let eventLoop: any EventLoop
    private let target: SocketAddress
    private let configuration: UpstreamPoolConfig
    /// `configuration.idleTimeout` as the event loop's clock takes it: converted once, not on
    /// every request that takes a parked connection.
    private let idleTimeout: TimeAmount
    private let clock: EventClock
    private let flushes: UpstreamFlushBatch
    private var idle = CircularBuffer<(connection: UpstreamConnection, parkedAt: NIODeadline)>()
    private var sweep: Scheduled<Void>?
    private var isShutDown = false

    init(eventLoop: any EventLoop, clock: EventClock, flushes: UpstreamFlushBatch, target: SocketAddress, configuration: UpstreamPoolConfig) {
        self.eventLoop = eventLoop
        self.clock = clock
        self.flushes = flushes
        self.target = target
        self.configuration = configuration
        self.idleTimeout = TimeAmount(configuration.idleTimeout)
    }

    /// Connections parked before this have been idle past `idleTimeout`.
    private var expiryCutoff: NIODeadline {
        self.clock.now() - self.idleTimeout
    }

    /// A parked connection ready for one request, the most recently parked live one; nil when
    /// there is none and the caller must `connect`.
    ///
    /// Two calls rather than one that takes a completion for both cases: nearly every request
    /// finds a parked connection, and a completion closure would be allocated for each.
    ///
    /// A connection parked by the answer it is still reading stays parked: the client's next
    /// pipelined request starts as that answer ends, inside the app's read, and bytes the app
    /// sent behind its answer would become the new request's response. Once the read is
    /// decoded, such bytes close the connection, as they do with no request behind: as a
    /// response nobody asked for (`UpstreamHandler.channelRead`) or as bytes no response starts
    /// with (`errorCaught`).
    func takeIdle() -> UpstreamConnection? {
        self.eventLoop.preconditionInEventLoop()
        guard let youngest = self.idle.last else { return nil }
        if youngest.parkedAt < self.expiryCutoff {
            // The youngest is past it, so every one is.
            self.closeExpired()
            return nil
        }
        // At most one: the read under way is one connection's (reads on a loop never nest).
        var stillReading: (connection: UpstreamConnection, parkedAt: NIODeadline)?
        defer {
            if let stillReading { self.idle.append(stillReading) }
        }
        while let parked = self.idle.popLast() {
            if parked.connection.isHandingOverAPart {
                assert(stillReading == nil, "two connections in the middle of a read")
                stillReading = parked
                continue
            }
            parked.connection.parkedIn = nil
            if parked.connection.isActive {
                return parked.connection
            }
        }
        return nil
    }

    /// Gives a connection back after an exchange. Only a connection whose last request and
    /// response both completed cleanly may be `reusable`; anything else is closed.
    func release(_ connection: UpstreamConnection, reusable: Bool) {
        self.eventLoop.preconditionInEventLoop()
        connection.delegate = nil
        connection.requestsServed += 1
        guard reusable, connection.isActive, !self.isShutDown, self.configuration.maxIdle > 0 else {
            connection.close()
            return
        }
        if self.idle.count >= self.configuration.maxIdle, let coldest = self.idle.popFirst() {
            // The coldest is the nearest to the app's keep-alive timeout: it goes, not this one.
            coldest.connection.parkedIn = nil
            coldest.connection.close()
        }
        connection.parkedIn = self
        self.idle.append((connection, self.clock.now()))
        self.scheduleSweepIfNeeded()
    }

    /// Closes idle connections and refuses to park more; leased ones close as they come back.
    func shutdown() {
        self.isShutDown = true
        self.sweep?.cancel()
        while let (connection, _) = self.idle.popLast() {
            connection.parkedIn = nil
            connection.close()
        }
    }

    /// A parked connection closed (the app's keep-alive timeout, a restart): it leaves the
    /// idle list, with any other that closed meanwhile.
    func parkedConnectionClosed() {
        self.idle.removeAll { !$0.connection.isActive }
    }

    /// Hands `completion` a new connection once it is connected.
    func connect(_ completion: @escaping (Result<UpstreamConnection, any Error>) -> Void) {
        let isTCP = self.target.protocol != .unix
        let clock = NIOLoopBound(self.clock, eventLoop: self.eventLoop)  // the connection's loop
        let flushes = NIOLoopBound(self.flushes, eventLoop: self.eventLoop)
        var bootstrap = ClientBootstrap(group: self.eventLoop)
            .connectTimeout(TimeAmount(self.configuration.connectTimeout))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addUpstreamHandlers(clock: clock.value, flushes: flushes.value)
                }
            }
        if isTCP {
            bootstrap = bootstrap.channelOption(.socketOption(.tcp_nodelay), value: 1)
        }
        bootstrap.connect(to: self.target).assumeIsolated().whenComplete { result in
            completion(
                result.flatMap { channel in
                    Result {
                        let handler = try channel.pipeline.syncOperations.handler(type: UpstreamHandler.self)
                        return UpstreamConnection(channel: channel, handler: handler)
                    }
                }
            )
        }
    }

    private func scheduleSweepIfNeeded() {
        guard self.sweep == nil else { return }
        let interval = TimeAmount(self.configuration.idleTimeout / 4)
        let period = min(max(interval, .milliseconds(100)), .seconds(5))
        self.sweep = self.eventLoop.assumeIsolated().scheduleTask(in: period) {
            self.sweep = nil
            self.closeExpired()
            if !self.idle.isEmpty { self.scheduleSweepIfNeeded() }
        }
    }

    private func closeExpired() {
        let cutoff = self.expiryCutoff
        while let oldest = self.idle.first, oldest.parkedAt < cutoff {
            self.idle.removeFirst()
            oldest.connection.parkedIn = nil
            oldest.connection.close()
        }
    }
}

extension ChannelPipeline.SynchronousOperations {
    /// An app connection's pipeline: one handler, which encodes requests and parses responses.
    func addUpstreamHandlers(clock: EventClock, flushes: UpstreamFlushBatch) throws {
        try self.addHandler(UpstreamHandler(clock: clock, flushes: flushes))
    }
}
