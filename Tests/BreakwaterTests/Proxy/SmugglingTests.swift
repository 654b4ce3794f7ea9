import Testing

/// Request smuggling vectors: each gets a 400 and a closed connection, and nothing reaches the
/// app in a form the app and the proxy would read differently.
@Suite struct SmugglingTests {
    private static let vectors: [(String, String)] = [
        ("CL.TE", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"),
        ("TE.CL", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"),
        ("TE not chunked last", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
        ("TE gzip only", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc"),
        ("obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n"),
        ("NUL in a header", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\u{0}b\r\n\r\n"),
        ("space before colon", "GET / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello"),
        ("bad content length", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5x\r\n\r\nhello"),
        ("two Host headers", "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"),
        ("no Host in HTTP/1.1", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n"),
        ("bare LF line ends", "GET / HTTP/1.1\nHost: x\n\n"),
        ("Transfer-Encoding in HTTP/1.0", "POST /echo HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("content length past 2^63", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775808\r\n\r\nhello"),
    ]

    @Test(arguments: Self.vectors.indices)
    func aSmugglingVectorIsRefused(index: Int) async throws {
        let (name, raw) = Self.vectors[index]
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send(raw)
            let response = try await client.readResponse()
            #expect(response.status == 400, "\(name)")
            #expect(try await client.waitForClose(), "\(name): connection left open")
            #expect(proxy.backend.requestsReceived.isEmpty, "\(name) reached the app")
        }
    }

    /// Blanks after a `Content-Length` value are not part of it (RFC 9110 §5.5): the decoder
    /// reads the body by the number, and the app must be told the same number, or the body
    /// becomes the app's next request — one that passed none of the proxy's policies.
    @Test func aContentLengthWithATrailingBlankFramesTheBodyForTheAppToo() async throws {
        let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n"
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: \(smuggled.utf8.count) \r\n\r\n" + smuggled)
            let response = try await client.readResponse()
            #expect(response.status == 200)
            #expect(response.bodyString == smuggled)
            #expect(try await proxy.request(get("/status/204")).status == 204)
            #expect(proxy.backend.requestsReceived.map(\.uri) == ["/echo", "/status/204"])
        }
    }

    /// The same from the app: its `Content-Length: 5 ` is a length of 5, passed on as such, and
    /// the connection carries the next request, where a body read until the close would have
    /// held the client until the app's idle timeout.
    @Test func anAppsContentLengthWithATrailingBlankIsItsLength() async throws {
        let script: RawScript = { _ in [.text("HTTP/1.1 200 OK\r\nContent-Length: 5 \r\n\r\nhello")] }
        try await ProxyHarness.with(rawBackend: script) { proxy, app in
            let client = try await proxy.connect()
            for _ in 0..<2 {
                try await client.send(get("/"))
                let response = try await client.readResponse(timeout: .seconds(5))
                #expect(response.status == 200)
                #expect(response.header("content-length") == "5")
                #expect(response.bodyString == "hello")
            }
            #expect(app.connectionsAccepted == 1)
            await client.close()
        }
    }

    /// Bytes an app sends after a whole answer were asked for by nobody: the start of a second
    /// head, say, which would become the front of the next request's answer on that connection.
    /// The connection is closed at once, never parked with them.
    @Test func anAppConnectionWithBytesAfterItsAnswerIsNotReused() async throws {
        let script: RawScript = { request in
            request.connection == 1
                ? [.text("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Le")]
                : [.text("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")]
        }
        try await ProxyHarness.with(rawBackend: script) { proxy, app in
            let client = try await proxy.connect()
            try await client.send(get("/first"))
            #expect(try await client.readResponse(timeout: .seconds(5)).bodyString == "hello")
            try await client.send(get("/second"))
            let second = try await client.readResponse(timeout: .seconds(5))
            #expect(second.status == 200)
            #expect(second.bodyString == "fresh")
            #expect(app.connections.first?.requestLines == ["GET /first HTTP/1.1"])
            await client.close()
        }
    }

    /// The pipelining handler hands over the next request as the refusal ends; it must die with
    /// the connection, not reach the app.
    @Test func aRequestPipelinedBehindARefusedOneNeverReachesTheApp() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send("GET /refused HTTP/1.1\r\n\r\n" + get("/smuggled"))
            #expect(try await client.readResponse().status == 400)
            #expect(try await client.waitForClose())
            #expect(proxy.backend.requestsReceived.isEmpty)
        }
    }

    /// A malformed head pipelined behind a good request is answered 400 after the good one's
    /// answer, and the bytes behind it, read in the same wake-up, do not cut the connection
    /// before either goes out.
    @Test func aMalformedRequestBehindAGoodOneIsAnsweredInItsTurn() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            let garbage = String(repeating: get("/after"), count: 200)
            try await client.send(get("/delay/300") + "GET /x HTTP/1.1\r\nHost x\r\n\r\n" + garbage)
            #expect(try await client.readResponse().status == 200)
            #expect(try await client.readResponse().status == 400)
            #expect(try await client.waitForClose())
            #expect(proxy.backend.requestsReceived.map(\.uri) == ["/delay/300"])
        }
    }

    @Test func nothingIsReadAfterConnectionClose() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send(get("/first", headers: ["Connection: close"]) + get("/second"))
            let response = try await client.readResponse()
            #expect(response.status == 200)
            #expect(response.header("connection") == "close")
            #expect(try await client.waitForClose())
            #expect(proxy.backend.requestsReceived.map(\.uri) == ["/first"])
        }
    }

    /// A reverse proxy opens no tunnels; a 2xx to CONNECT would leave the client and the app
    /// disagreeing about where HTTP ends.
    @Test func connectIsRefused() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
            let response = try await client.readResponse()
            #expect(response.status == 400)
            #expect(response.header("x-breakwater-reason") == "bad_request")
            #expect(try await client.waitForClose())
            #expect(proxy.backend.requestsReceived.isEmpty)
        }
    }

    /// An answer to HEAD announces its length but carries no body, the proxy's own included:
    /// the client would read the body as the next response.
    @Test func aRefusedHEADGetsNoBody() async throws {
        try await ProxyHarness.with { proxy in
            let client = try await proxy.connect()
            try await client.send("HEAD / HTTP/1.1\r\n\r\n")
            let head = try await client.readResponseHead()
            #expect(head.status == 400)
            #expect(head.header("content-length") != nil)
            #expect(try await client.waitForClose())
            let rest = try? await client.readAvailable(timeout: .milliseconds(200))
            #expect(rest == nil, "bytes after the head: \(String(decoding: rest ?? [], as: UTF8.self))")
        }
    }
}
