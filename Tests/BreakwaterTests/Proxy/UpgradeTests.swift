@testable import Breakwater
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

/// `Upgrade` requests become byte tunnels once the app agrees.
@Suite struct UpgradeTests {
    private static let upgradeRequest = get(
        "/ws",
        headers: ["Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    )

    @Test func aWebSocketTunnelEchoesBothWays() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send(Self.upgradeRequest)
            let head = try await client.readResponseHead()
            #expect(head.status == 101)
            #expect(head.header("upgrade") == "websocket")
            #expect(head.header("connection")?.lowercased() == "upgrade")
            let received = try #require(proxy.backend.requestsReceived.last)
            #expect(received.header("upgrade") == "websocket")
            #expect(received.header("sec-websocket-key") == "dGhlIHNhbXBsZSBub25jZQ==")

            for message in ["first frame", String(repeating: "y", count: 200_000)] {
                try await client.send(message)
                let echoed = try await client.readExactly(message.utf8.count, timeout: .seconds(10))
                #expect(String(decoding: echoed, as: UTF8.self) == message)
            }
            await client.close()
        }
    }

    /// A tunnel that carries bytes stays open past `idle_timeout`; one that carries nothing
    /// either way for that long closes on both sides, as a peer gone without a FIN would
    /// otherwise hold it for ever.
    @Test func aTunnelIdleForTheIdleTimeoutCloses() async throws {
        try await ProxyHarness.with(configuration: "[server]\nidle_timeout = \"3s\"\n") { proxy in
            let client = try await proxy.connect()
            try await client.send(Self.upgradeRequest)
            #expect(try await client.readResponseHead().status == 101)
            for round in 0..<4 {
                try await Task.sleep(for: .seconds(1))
                try await client.send("ping \(round)")
                #expect(try await client.readExactly("ping \(round)".utf8.count, timeout: .seconds(5)) == Array("ping \(round)".utf8))
            }
            let started = ContinuousClock.now
            #expect(try await client.waitForClose(timeout: .seconds(10)), "an idle tunnel stayed open")
            #expect(ContinuousClock.now - started > .seconds(2))
            try await eventually { proxy.backend.openConnections == 0 }
        }
    }

    @Test func closingTheClientClosesTheAppSide() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send(Self.upgradeRequest + "bytes right behind the head")
            #expect(try await client.readResponseHead().status == 101)
            let echoed = try await client.readExactly("bytes right behind the head".utf8.count, timeout: .seconds(5))
            #expect(String(decoding: echoed, as: UTF8.self) == "bytes right behind the head")
            await client.close()
            try await eventually { proxy.backend.openConnections == 0 }
        }
    }

    /// A drain closes an open tunnel when it begins: a tunnel has no request boundary to finish
    /// at, and waiting for one would hold every drain to its timeout.
    @Test func aDrainClosesAnOpenTunnelAtOnce() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send(Self.upgradeRequest)
            #expect(try await client.readResponseHead().status == 101)
            try await client.send("ping")
            #expect(try await client.readExactly(4) == Array("ping".utf8))
            let started = ContinuousClock.now
            let cut = try await proxy.proxy.shutdown(gracePeriod: .seconds(10))
            let took = ContinuousClock.now - started
            #expect(took < .seconds(5), "the drain waited \(took) for an open tunnel")
            #expect(cut == 0)
            #expect(try await client.waitForClose(timeout: .seconds(5)))
            try await eventually { proxy.backend.openConnections == 0 }
        }
    }

    /// A side that will not take the last bytes cannot hold a closing tunnel open: the client
    /// here reads nothing while the app streams, and the drain still closes the tunnel, once
    /// `idle_timeout` has passed.
    @Test func aTunnelWhoseClientStoppedReadingStillCloses() async throws {
        let script: RawScript = { request in
            guard request.isComplete else { return nil }
            return [
                .text("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
                .write(Array(repeating: UInt8(ascii: "a"), count: 32 << 20)),
                .hang,
            ]
        }
        try await ProxyHarness.with(rawBackend: script, configuration: "[server]\nidle_timeout = \"1s\"\n") { proxy, _ in
            let client = try await RawClient.connect(port: proxy.port, autoRead: false)
            try await client.send(Self.upgradeRequest)
            #expect(try await client.readResponseHead().status == 101)
            try await Task.sleep(for: .milliseconds(500))  // the stream fills the buffers on the way
            let started = ContinuousClock.now
            _ = try await proxy.proxy.shutdown(gracePeriod: .seconds(15))
            let took = ContinuousClock.now - started
            #expect(took < .seconds(8), "the drain waited \(took) on a client that reads nothing")
            #expect(proxy.proxy.clientConnections == 0)
        }
    }

    /// An app that agrees, says its last word and closes in one go (a WebSocket server closing
    /// at once, a protocol that answers and hangs up) reaches the client whole: the 101, the
    /// bytes behind it, then the close.
    @Test func bytesAndACloseRightBehindThe101ReachTheClient() async throws {
        let script: RawScript = { request in
            guard request.isComplete else { return nil }
            return [
                .cork,
                .text("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nlast words"),
                .close,
            ]
        }
        try await ProxyHarness.with(rawBackend: script) { proxy, _ in
            for _ in 0..<5 {
                let client = try await proxy.connect()
                try await client.send(Self.upgradeRequest)
                #expect(try await client.readResponseHead().status == 101)
                let said = try await client.readExactly("last words".utf8.count, timeout: .seconds(5))
                #expect(String(decoding: said, as: UTF8.self) == "last words")
                #expect(try await client.waitForClose(timeout: .seconds(5)))
            }
        }
    }

    /// Bytes the app sent behind its 101 in the same read wait in the app side's handler while
    /// the exchange turns to the tunnel, and go on to the tunnel (behind it in the pipeline)
    /// when the splice removes it.
    @Test func bytesBehindA101GoOnToTheTunnelWhenTheSpliceRemovesTheHandler() throws {
        let channel = EmbeddedChannel()
        let handler = UpstreamHandler(clock: EventClock(), flushes: UpstreamFlushBatch(eventLoop: channel.eventLoop))
        try channel.pipeline.syncOperations.addHandler(handler)
        let exchange = RecordingExchange()
        UpstreamConnection(channel: channel, handler: handler).delegate = exchange
        try channel.writeInbound(ByteBuffer(string: "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nlast words"))
        guard exchange.parts.count == 2, case .head(let head) = exchange.parts[0], case .end = exchange.parts[1] else {
            Issue.record("expected the 101's head and end, got \(exchange.parts)")
            return
        }
        #expect(head.status == .switchingProtocols)
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        try channel.pipeline.syncOperations.removeHandler(handler).wait()
        #expect(try channel.readInbound(as: ByteBuffer.self) == ByteBuffer(string: "last words"))
    }

    /// After an upgrade request the app's HTTP reader (llhttp in uvicorn) may have stopped
    /// parsing even when it refused the switch: that app connection never carries another request.
    @Test func anAppConnectionThatRefusedAnUpgradeIsNotReused() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send(get("/plain", headers: ["Connection: Upgrade", "Upgrade: websocket"]))
            #expect(try await client.readResponse().status == 200)
            #expect(try await client.waitForClose())

            let next = try await proxy.connect()
            try await next.send(get("/after"))
            #expect(try await next.readResponse().status == 200)
            #expect(proxy.backend.connectionsAccepted == 2)
        }
    }
}

/// An exchange that records what its app connection hands it.
private final class RecordingExchange: UpstreamConnectionDelegate {
    var parts: [ResponsePart] = []
    var wantsUpstreamReads: Bool { true }
    func upstreamReceived(_ part: ResponsePart) { self.parts.append(part) }
    func upstreamReadComplete() {}
    func upstreamWritabilityChanged(isWritable: Bool) {}
    func upstreamClosed(error: (any Error)?) {}
}
