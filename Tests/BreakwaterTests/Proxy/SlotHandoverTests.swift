@testable import Breakwater
import Logging
import NIOCore
import NIOEmbedded
import Testing

/// A slot handed to a queued request is delivered on the request's event loop, a moment after
/// the gate chose it. If the request ends in that moment (its client leaves), the slot must go
/// back to the gate it came from. Real loops make that moment too short to aim at, so the
/// client connection here runs on an `EmbeddedEventLoop`, which delivers the hand-over only
/// when told to, and the other requests are stood in for by taking slots from the gates directly.
@Suite struct SlotHandoverTests {
    @Test func aSlotHandedToARequestThatLeftGoesBackToItsOwnGate() throws {
        let configuration = try ConfigLoader.parse(
            """
            listen = "127.0.0.1:0"
            upstream = "127.0.0.1:9"
            [concurrency]
            soft_limit = 2
            hard_limit = 2
            [[route]]
            name = "bulkhead"
            path = "/"
            [route.concurrency]
            soft_limit = 1
            hard_limit = 2
            [log]
            access = false
            """,
            fileName: "test.conf"
        )
        let loop = EmbeddedEventLoop()
        let upstreams = try UpstreamSet(addresses: [try #require(configuration.upstream)], supervised: false)
        let context = EventLoopContext(eventLoop: loop, upstreams: upstreams, configuration: configuration.upstreamPool)
        let shared = ProxyShared(configuration: configuration, lifecycle: Lifecycle(appReadyAtStart: true), logger: Logger(label: "test"))
        let route = shared.route(method: "GET", uri: "/")
        #expect(route.name == "bulkhead")
        let (bulkhead, proxyLimit) = (route.gates[0], route.gates[1])
        let nobody = ConcurrencyGate.Waiter(eventLoop: loop) {}

        // Another request holds a slot of the proxy's and the bulkhead's only slot.
        #expect(proxyLimit.acquire(nobody) == .admitted)
        #expect(bulkhead.acquire(nobody) == .admitted)

        // The client's request takes the last place under the proxy's hard limit and queues for
        // the bulkhead.
        let client = EmbeddedChannel(loop: loop)
        try client.pipeline.syncOperations.addClientHandlers(generation: CurrentGeneration(shared), server: configuration.server, loop: context)
        try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 40000)).wait()
        try client.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: test\r\n\r\n"))
        #expect(proxyLimit.acquire(nobody) == .rejected, "the request holds no place of the proxy's")

        // The other request ends: its bulkhead slot is handed to the queued request ...
        bulkhead.release()
        // ... whose client leaves before the hand-over arrives.
        client.pipeline.fireChannelInactive()
        loop.run()

        // The request gave back the proxy's place it held, and the bulkhead slot it was handed.
        #expect(bulkhead.acquire(nobody) == .admitted, "the bulkhead's slot was lost")
        #expect(proxyLimit.acquire(nobody) == .admitted)
        #expect(proxyLimit.acquire(nobody) == .rejected, "the proxy's limit was given a slot it never lent")
        _ = try? client.finish()
    }
}
