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
