import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// What the fixture app received: one request, head and whole body.
struct ReceivedRequest: Sendable {
    var method: String
    var uri: String
    var headers: [(name: String, value: String)]
    var body: [UInt8]

    func header(_ name: String) -> String? {
        self.headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }
}

/// An app for the proxy to stand in front of, on NIO, whose behaviour each request picks by
/// its path: echo, any status, delays, hangs, closes and resets, streams and large bodies,
/// and an upgrade to a byte echo. See `FixtureHandler` for the paths.
final class BackendFixture: Sendable {
    private let channel: any Channel
    private let state: NIOLockedValueBox<FixtureState>

    private init(channel: any Channel, state: NIOLockedValueBox<FixtureState>) {
        self.channel = channel
        self.state = state
    }

    /// Listens on 127.0.0.1 with a port the system picks, or on `unixSocketPath`.
    static func start(unixSocketPath: String? = nil) async throws -> BackendFixture {
        let state = NIOLockedValueBox(FixtureState())
        var bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                let number = state.withLockedValue { state in
                    state.connectionsAccepted += 1
                    state.openConnections += 1
                    return state.connectionsAccepted
                }
                channel.closeFuture.whenComplete { _ in
                    state.withLockedValue { $0.openConnections -= 1 }
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        HTTPResponseEncoder(),
                        ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)),
                        HTTPServerPipelineHandler(),
                        FixtureHandler(connectionNumber: number, state: state),
                    ])
                }
            }
        if unixSocketPath == nil {
            bootstrap = bootstrap.childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        }
        let channel = try await (unixSocketPath.map { bootstrap.bind(unixDomainSocketPath: $0, cleanupExistingSocketFile: true) }
            ?? bootstrap.bind(host: "127.0.0.1", port: 0)).get()
        return BackendFixture(channel: channel, state: state)
    }

    var port: Int { self.channel.localAddress!.port! }
    var connectionsAccepted: Int { self.state.withLockedValue { $0.connectionsAccepted } }
    var openConnections: Int { self.state.withLockedValue { $0.openConnections } }
    var requestsReceived: [ReceivedRequest] { self.state.withLockedValue { $0.requests } }

    /// While true, `/switchable` answers 500; the test decides when the app recovers.
    func setFailing(_ failing: Bool) {
        self.state.withLockedValue { $0.failing = failing }
    }

    /// The most `/delay` requests the app worked on at once.
    var maxConcurrentDelays: Int { self.state.withLockedValue { $0.maxDelaysInFlight } }

    /// Requests that reached the app whose path starts with `prefix`.
    func requestCount(pathPrefix prefix: String) -> Int {
        self.state.withLockedValue { $0.requests.filter { $0.uri.hasPrefix(prefix) }.count }
    }

    func shutdown() async throws {
        try await self.channel.close()
    }
}

struct FixtureState: Sendable {
    var connectionsAccepted = 0
    var openConnections = 0
    var requests: [ReceivedRequest] = []
    var failing = false
    /// `/delay` requests being worked on now, and the most at once.
    var delaysInFlight = 0
    var maxDelaysInFlight = 0
    /// Requests seen per `/flaky/KEY`.
    var flakyCounts: [String: Int] = [:]
}
