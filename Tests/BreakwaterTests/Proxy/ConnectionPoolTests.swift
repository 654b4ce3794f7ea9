@testable import Breakwater
import NIOCore
import NIOPosix
import Testing

/// The pool of app connections on its own, on one event loop, against the backend fixture.
@Suite struct ConnectionPoolTests {
    /// Past `max_idle`, the pool closes its coldest parked connection — the one nearest the
    /// app's keep-alive timeout, as nginx's least-recently-used rule has it — and keeps the one
    /// just returned.
    @Test func aFullPoolClosesItsColdestConnection() async throws {
        let (keptTheWarmest, coldestClosed) = try await Self.onAPool(maxIdle: 1, connections: 2) { pool, connections in
            let (cold, warm) = (connections[0], connections[1])
            pool.release(cold, reusable: true)
            pool.release(warm, reusable: true)
            let keptTheWarmest = pool.takeIdle() === warm
            // Closing from its own event loop takes effect at once.
            let coldestClosed = !cold.isActive
            warm.close()
            return (keptTheWarmest, coldestClosed)
        }
        #expect(keptTheWarmest)
        #expect(coldestClosed)
    }

    /// `max_idle = 0` keeps no connection: one given back is closed, never handed out again.
    @Test func aPoolWithNoIdleRoomKeepsNothing() async throws {
        let (handedOut, closed) = try await Self.onAPool(maxIdle: 0, connections: 1) { pool, connections in
            pool.release(connections[0], reusable: true)
            return (pool.takeIdle() != nil, !connections[0].isActive)
        }
        #expect(!handedOut)
        #expect(closed)
    }

    /// Runs `body` on the event loop of a pool with `maxIdle`, once it has made `connections`
    /// connections to the backend fixture and they are active; shuts the pool down after.
    private static func onAPool<Result: Sendable>(
        maxIdle: Int,
        connections count: Int,
        _ body: @escaping @Sendable (UpstreamConnectionPool, [UpstreamConnection]) -> Result
    ) async throws -> Result {
        let backend = try await BackendFixture.start()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let target = try SocketAddress(ipAddress: "127.0.0.1", port: backend.port)
        let result = try await loop.flatSubmit { () -> EventLoopFuture<Result> in
            var configuration = UpstreamPoolConfig()
            configuration.maxIdle = maxIdle
            let pool = UpstreamConnectionPool(eventLoop: loop, clock: EventClock(), flushes: UpstreamFlushBatch(eventLoop: loop), target: target, configuration: configuration)
            let connected = (0..<count).map { _ in
                let promise = loop.makePromise(of: UpstreamConnection.self)
                pool.connect { promise.completeWith($0) }
                return promise.futureResult
            }
            return EventLoopFuture.whenAllSucceed(connected, on: loop).assumeIsolated().flatMap { connections in
                // A connect's promise completes just before the channel says it is active.
                loop.assumeIsolated().scheduleTask(in: .milliseconds(20)) { () -> Result in
                    let result = body(pool, connections)
                    pool.shutdown()
                    return result
                }.futureResult
            }.nonisolated()
        }.get()
        try await backend.shutdown()
        return result
    }
}
