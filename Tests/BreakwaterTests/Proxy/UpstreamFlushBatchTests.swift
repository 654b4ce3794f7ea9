@testable import Breakwater
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

/// Requests to the app go at once when they are alone there, and together at the end of the
/// loop's turn when others are at the app too. An `EmbeddedEventLoop` is the loop: its tasks run
/// when `run()` says, which is where a real loop's turn ends; an `EmbeddedChannel` hands out
/// only what was flushed.
@Suite struct UpstreamFlushBatchTests {
    @Test func aRequestAloneAtTheAppGoesAtOnce() throws {
        let app = try AppSide(connections: 1)
        app.send(on: 0)
        #expect(try app.sent(on: 0) == "GET /0 HTTP/1.1\r\n\r\n")
    }

    @Test func requestsTogetherAtTheAppGoAtTheEndOfTheTurn() throws {
        let app = try AppSide(connections: 3)
        app.send(on: 0, bodyLength: 4)
        for index in 1..<3 {
            app.send(on: index)
        }
        // The rest of the first one's request, written after its flush was held: it goes with it.
        app.connections[0].writeBody(ByteBuffer(string: "body"))
        app.connections[0].flush()
        for index in 0..<3 {
            #expect(try app.sent(on: index) == nil, "connection \(index) flushed before the turn ended")
        }
        app.loop.run()
        #expect(try app.sent(on: 0) == "POST /0 HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody")
        for index in 1..<3 {
            #expect(try app.sent(on: index) == "GET /\(index) HTTP/1.1\r\n\r\n")
        }
        // The next turn starts afresh: held again, and sent at its end.
        app.send(on: 1)
        #expect(try app.sent(on: 1) == nil)
        app.loop.run()
        #expect(try app.sent(on: 1) == "GET /1 HTTP/1.1\r\n\r\n")
    }

    /// A connection given back to the pool, or taken out of it (a tunnel's), is no longer
    /// counted: the one left alone at the app is not made to wait.
    @Test func connectionsGivenBackOrRemovedNoLongerCount() throws {
        let app = try AppSide(connections: 3)
        app.connections[1].delegate = nil
        _ = try app.channels[2].pipeline.syncOperations.removeHandler(app.handlers[2]).wait()
        app.send(on: 0)
        #expect(try app.sent(on: 0) == "GET /0 HTTP/1.1\r\n\r\n")
    }
}

/// `connections` connections to the app on one loop, each leased to a request.
private struct AppSide {
    let loop = EmbeddedEventLoop()
    let channels: [EmbeddedChannel]
    let handlers: [UpstreamHandler]
    let connections: [UpstreamConnection]
    private let exchange = WaitingExchange()

    init(connections count: Int) throws {
        let loop = self.loop
        let flushes = UpstreamFlushBatch(eventLoop: loop)
        let clock = EventClock()
        self.channels = (0..<count).map { _ in EmbeddedChannel(loop: loop) }
        self.handlers = (0..<count).map { _ in UpstreamHandler(clock: clock, flushes: flushes) }
        for (channel, handler) in zip(self.channels, self.handlers) {
            try channel.pipeline.syncOperations.addHandler(handler)
        }
        self.connections = zip(self.channels, self.handlers).map { UpstreamConnection(channel: $0, handler: $1) }
        for connection in self.connections {
            connection.delegate = self.exchange
        }
    }

    /// A request's head for `/index`, flushed: a GET, or a POST whose body is still to come.
    func send(on index: Int, bodyLength: Int? = nil) {
        let method: HTTPMethod = bodyLength == nil ? .GET : .POST
        let head = EncodedHead(allocator: ByteBufferAllocator(), expectedLength: 64) { out in
            out.requestLine(method: method, target: "/\(index)", version: .http1_1)
            if let bodyLength {
                out.field("Content-Length", String(bodyLength))
            }
            out.endHead()
        }
        self.connections[index].writeHead(head, method: method)
        self.connections[index].flush()
    }

    /// What connection `index` has put on the wire since last asked; nil if nothing.
    func sent(on index: Int) throws -> String? {
        var bytes = ByteBuffer()
        while case .byteBuffer(var part) = try self.channels[index].readOutbound(as: IOData.self) {
            bytes.writeBuffer(&part)
        }
        return bytes.readableBytes == 0 ? nil : String(buffer: bytes)
    }
}

private final class WaitingExchange: UpstreamConnectionDelegate {
    var wantsUpstreamReads: Bool { true }
    func upstreamReceived(_ part: ResponsePart) {}
    func upstreamReadComplete() {}
    func upstreamWritabilityChanged(isWritable: Bool) {}
    func upstreamClosed(error: (any Error)?) {}
}
