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
        let backend = try await BackendFixture.start()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let target = try SocketAddress(ipAddress: "127.0.0.1", port: backend.port)
        let (keptTheWarmest, coldestClosed) = try await loop.flatSubmit { () -> EventLoopFuture<(Bool, Bool)> in
            var configuration = UpstreamPoolConfig()
            configuration.maxIdle = 1
            let pool = UpstreamConnectionPool(eventLoop: loop, target: target, configuration: configuration)
            let cold = loop.makePromise(of: UpstreamConnection.self)
            let warm = loop.makePromise(of: UpstreamConnection.self)
            pool.connect { cold.completeWith($0) }
            pool.connect { warm.completeWith($0) }
            return cold.futureResult.assumeIsolated().flatMap { cold in
                warm.futureResult.assumeIsolated().flatMap { warm in
                    // A connect's promise completes just before the channel says it is active.
                    loop.assumeIsolated().scheduleTask(in: .milliseconds(20)) { () -> (Bool, Bool) in
                        pool.release(cold, reusable: true)
                        pool.release(warm, reusable: true)
                        let keptTheWarmest = pool.takeIdle() === warm
                        // Closing from its own event loop takes effect at once.
                        let coldestClosed = !cold.isActive
                        warm.close()
                        pool.shutdown()
                        return (keptTheWarmest, coldestClosed)
                    }.futureResult
                }.nonisolated()
            }.nonisolated()
        }.get()
        #expect(keptTheWarmest)
        #expect(coldestClosed)
        try await backend.shutdown()
    }

    /// `max_idle = 0` keeps no connection: one given back is closed, never handed out again.
    @Test func aPoolWithNoIdleRoomKeepsNothing() async throws {
        let backend = try await BackendFixture.start()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let target = try SocketAddress(ipAddress: "127.0.0.1", port: backend.port)
        let (handedOut, closed) = try await loop.flatSubmit { () -> EventLoopFuture<(Bool, Bool)> in
            var configuration = UpstreamPoolConfig()
            configuration.maxIdle = 0
            let pool = UpstreamConnectionPool(eventLoop: loop, target: target, configuration: configuration)
            let connected = loop.makePromise(of: UpstreamConnection.self)
            pool.connect { connected.completeWith($0) }
            return connected.futureResult.assumeIsolated().flatMap { connection in
                loop.assumeIsolated().scheduleTask(in: .milliseconds(20)) { () -> (Bool, Bool) in
                    pool.release(connection, reusable: true)
                    let handedOut = pool.takeIdle() != nil
                    let closed = !connection.isActive
                    pool.shutdown()
                    return (handedOut, closed)
                }.futureResult
            }.nonisolated()
        }.get()
        #expect(!handedOut)
        #expect(closed)
        try await backend.shutdown()
    }
}
