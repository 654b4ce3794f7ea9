// The request path under libFuzzer: bytes from a client, through the pipeline the proxy builds
// for a client connection (ClientConnectionGuard, NIO's strict HTTP/1.1 decoder,
// DownstreamHandler with its pipelining and encoder, ProxyExchange, HeaderRewriting,
// MessageFraming), out through the real upstream pipeline (UpstreamHandler and its encoder, NIO's
// response decoder) to a model app that reads the bytes with a strict HTTP/1.1 decoder of its
// own and answers.
//
// Everything runs on one EmbeddedEventLoop: no sockets, no threads, no wall-clock waits. The
// upstream connection pool is handed ready-made connections over EmbeddedChannels, so the proxy
// never dials. See fuzz/README.md for the input format and the properties checked.

@testable import Breakwater
import Atomics
import Foundation
import FuzzDriver
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1

@main
enum FuzzRequestMain {
    static func main() {
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzRequest(data, size) })
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRequest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let data, size > 0 else { return 0 }
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let mode = Mode(bytes[0])
    var session = Session(mode: mode, input: Array(bytes.dropFirst()))
    session.run()
    return 0
}

private let debugging = ProcessInfo.processInfo.environment["BREAKWATER_FUZZ_DEBUG"] != nil

// MARK: - The input

/// The first byte of an input picks how the rest is delivered and how the model app answers;
/// the rest is what the client sends.
struct Mode: CustomStringConvertible {
    enum Answer: UInt8 {
        /// `200` with `content-length`, once the whole request arrived.
        case contentLength = 0
        /// `200` chunked, once the whole request arrived.
        case chunked = 1
        /// `200` with `content-length` as soon as the head arrived (an app that does not read
        /// the body first).
        case early = 2
        /// An HTTP/1.0 `200` whose body runs until the app closes the connection.
        case untilClose = 3
    }

    /// Bytes per read from the client: the whole input at once, or pieces.
    let readSize: Int
    let answer: Answer
    /// `max_header_bytes = 512`, `max_body_bytes = 64` instead of the defaults.
    let smallLimits: Bool
    /// After the input, the client closes its connection.
    let closeAtEnd: Bool
    /// After the input, 11 virtual seconds pass (header timeout, the head hold).
    let advanceTime: Bool
    /// The app answers an upgrade request with `101` and becomes a byte tunnel.
    let acceptUpgrade: Bool

    init(_ byte: UInt8) {
        self.readSize = [Int.max, 1, 3, 64][Int(byte & 0b11)]
        self.answer = Answer(rawValue: (byte >> 2) & 0b11)!
        self.smallLimits = byte & 0x10 != 0
        self.closeAtEnd = byte & 0x20 != 0
        self.advanceTime = byte & 0x40 != 0
        self.acceptUpgrade = byte & 0x80 != 0
    }

    var description: String {
        "reads of \(self.readSize == .max ? "all" : String(self.readSize)), answer \(self.answer), small limits \(self.smallLimits), "
            + "close at end \(self.closeAtEnd), advance time \(self.advanceTime), accept upgrade \(self.acceptUpgrade)"
    }
}

// MARK: - Shared set-up

private let logger = Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })
private let upstreamAddress = UpstreamAddress.tcp(HostPort(host: "127.0.0.1", port: 9))
private let upstreams = try! UpstreamSet(addresses: [upstreamAddress], supervised: false)
private let clientAddress = try! SocketAddress(ipAddress: "192.0.2.7", port: 40000)
private let appAddress = try! SocketAddress(ipAddress: "127.0.0.1", port: 9)

private func configuration(small: Bool) -> ProxyConfig {
    var config = ProxyConfig()
    config.upstream = upstreamAddress
    config.log.access = false
    if small {
        config.server.maxHeaderBytes = 512
        config.server.maxBodyBytes = 64
    }
    return config
}

private let configurations = [configuration(small: false), configuration(small: true)]


// MARK: - One run

/// A request as a strict decoder reads it: the client's bytes (the reference) or what reached
/// the app.
struct ReadRequest {
    var head: HTTPRequestHead
    var body: [UInt8] = []
    var complete = false
}

/// One upstream connection: the proxy's end is a real `UpstreamConnection` over an
/// EmbeddedChannel, the app's end reads what the proxy wrote with a strict decoder.
final class ModelApp {
    let channel: EmbeddedChannel
    let connection: UpstreamConnection
    /// The app's HTTP reading of the bytes the proxy sent.
    let reader: EmbeddedChannel
    /// Indexes into `Session.received` of the requests read on this connection.
    var requests: [Int] = []
    var usedByProxy = false
    var answered = 0
    /// After a `101`: the bytes that came through the tunnel.
    var tunnel: [UInt8]?
    var closedByApp = false

    init(loop: EmbeddedEventLoop, clock: EventClock, flushes: UpstreamFlushBatch) throws {
        self.channel = EmbeddedChannel(loop: loop)
        // What `UpstreamConnectionPool.connect` puts on a new connection.
        try self.channel.pipeline.syncOperations.addUpstreamHandlers(clock: clock, flushes: flushes)
        let handler = try self.channel.pipeline.syncOperations.handler(type: UpstreamHandler.self)
        self.channel.connect(to: appAddress, promise: nil)
        self.connection = UpstreamConnection(channel: self.channel, handler: handler)
        self.reader = EmbeddedChannel(loop: loop)
        try self.reader.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
    }
}

/// The socket's side of a client connection: once the connection is closed, nothing more goes
/// out (an EmbeddedChannel would still record what is written while it closes).
final class Wire: ChannelOutboundHandler {
    typealias OutboundIn = IOData
    private var closed = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !self.closed else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        context.write(data, promise: promise)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if mode == .all {
            self.closed = true
        }
        context.close(mode: mode, promise: promise)
    }
}

struct Session {
    let mode: Mode
    let input: [UInt8]
    let config: ProxyConfig
    let loop = EmbeddedEventLoop()
    let client: EmbeddedChannel
    let context: EventLoopContext
    var apps: [ModelApp] = []
    /// What the app read, in the order the heads arrived.
    var received: [ReadRequest] = []
    /// Bytes the client received.
    var clientOutput: [UInt8] = []
    var lifecycle: Lifecycle?
    var generation: CurrentGeneration?
    /// `checkNextClient`'s connection, and what it read.
    var nextClient: EmbeddedChannel?
    var nextClientOutput: [UInt8] = []

    init(mode: Mode, input: [UInt8]) {
        self.mode = mode
        self.input = input
        self.config = configurations[mode.smallLimits ? 1 : 0]
        self.client = EmbeddedChannel(loop: self.loop)
        self.context = EventLoopContext(eventLoop: self.loop, upstreams: upstreams, configuration: self.config.upstreamPool)
    }

    mutating func run() {
        let lifecycle = Lifecycle(appReadyAtStart: true)
        self.lifecycle = lifecycle
        let generation = CurrentGeneration(ProxyShared(configuration: self.config, lifecycle: lifecycle, logger: logger))

        self.generation = generation
        try! self.addClientHandlers(to: self.client)
        self.client.connect(to: clientAddress, promise: nil)
        self.pump()

        var offset = 0
        while offset < self.input.count && self.client.isActive {
            let end = self.input.count - offset <= self.mode.readSize ? self.input.count : offset + self.mode.readSize
            var buffer = self.client.allocator.buffer(capacity: end - offset)
            buffer.writeBytes(self.input[offset..<end])
            offset = end
            // Errors travel the pipeline to DownstreamHandler, which answers them; whatever
            // reaches the end of the pipeline is only rethrown here.
            _ = try? self.client.writeInbound(buffer)
            self.pump()
        }
        if self.mode.closeAtEnd {
            self.client.close(promise: nil)
            self.pump()
        }
        if self.mode.advanceTime {
            self.loop.advanceTime(by: .seconds(11))
            self.pump()
        }

        let reference = Reference(input: self.input, limits: self.limits)
        self.check(against: reference, clientActive: self.client.isActive)
        self.checkResponses(to: reference)
        self.checkNextClient()
        self.tearDown()
    }

    /// The decoder limits the proxy derives from `server.max_header_bytes`.
    var limits: NIOHTTPDecoderLimitConfiguration {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = self.config.server.maxHeaderBytes
        limits.maxHeaderListSize = self.config.server.maxHeaderBytes
        return limits
    }

    /// The proxy's own client pipeline, behind a handler that records what the client receives.
    private func addClientHandlers(to channel: EmbeddedChannel) throws {
        channel.remoteAddress = clientAddress
        try channel.pipeline.syncOperations.addHandler(Wire())
        try channel.pipeline.syncOperations.addClientHandlers(generation: self.generation!, server: self.config.server, loop: self.context)
    }

    /// Whatever this client did, the next client on the same event loop (and so the same pool of
    /// app connections) gets a plain GET answered by the app: no app connection is left poisoned.
    private mutating func checkNextClient() {
        let next = EmbeddedChannel(loop: self.loop)
        try! self.addClientHandlers(to: next)
        next.connect(to: clientAddress, promise: nil)
        self.nextClient = next
        let before = self.received.count
        _ = try? next.writeInbound(next.allocator.buffer(string: "GET /next-client HTTP/1.1\r\nHost: next.example\r\n\r\n"))
        self.pump()
        let reached = self.received[before...].contains { $0.head.uri == "/next-client" && $0.complete }
        let answer = self.nextClientOutput.debugString
        if !reached || !self.nextClientOutput.starts(with: Array("HTTP/1.1 200 OK\r\n".utf8)) {
            fail(
                "the next client's GET was not answered by the app after this input",
                "reached the app: \(reached), the next client read: \(answer)",
                "app connections: \(self.apps.map { "\($0.requests.count) requests, active \($0.channel.isActive), answered \($0.answered)" })"
            )
        }
        _ = try? next.finish(acceptAlreadyClosed: true)
    }

    /// The client can read what the proxy sent it as HTTP/1.1 responses to its requests, in order.
    private func checkResponses(to reference: Reference) {
        let channel = EmbeddedChannel(loop: self.loop)
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        try! channel.pipeline.syncOperations.addHandlers([
            HTTPRequestEncoder(),
            ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes, informationalResponseStrategy: .forward)),
        ])
        // The response decoder learns each request's method (HEAD, CONNECT) from the requests
        // written through it; one more stands for a request the proxy refused unread.
        for request in reference.requests {
            // The proxy refuses CONNECT with a 400 (a reverse proxy opens no tunnels); a decoder
            // told the request was CONNECT would take whatever follows for a tunnel.
            var head = request.head
            if head.method == .CONNECT { head.method = .GET }
            try! channel.writeOutbound(HTTPClientRequestPart.head(head))
            try! channel.writeOutbound(HTTPClientRequestPart.end(nil))
        }
        try! channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")))
        try! channel.writeOutbound(HTTPClientRequestPart.end(nil))
        while (try? channel.readOutbound(as: IOData.self)) != nil {}
        do {
            try channel.writeInbound(channel.allocator.buffer(bytes: self.clientOutput))
        } catch {
            fail("the client cannot read the proxy's answers: \(error)", "the client read: \(self.clientOutput.debugString)")
        }
        var finals = 0
        while let part = try? channel.readInbound(as: HTTPClientResponsePart.self) {
            guard case .head(let head) = part, head.status.code >= 200 || head.status == .switchingProtocols else { continue }
            if finals < reference.requests.count, reference.requests[finals].head.method == .CONNECT, head.status != .badRequest {
                fail("CONNECT was answered \(head.status.code), not refused", "the client read: \(self.clientOutput.debugString)")
            }
            finals += 1
        }
        if finals > reference.requests.count + 1 {
            fail("the client got \(finals) answers to \(reference.requests.count) requests", "the client read: \(self.clientOutput.debugString)")
        }
    }

    // MARK: Driving

    /// Runs everything that can run: the loop's tasks, the app reading what the proxy wrote,
    /// the app answering; keeps two unused connections in the pool so the proxy never dials.
    mutating func pump() {
        var rounds = 0
        while true {
            rounds += 1
            precondition(rounds < 100_000, "the proxy and the model app never settle")
            self.loop.run()
            self.topUpPool()
            self.drainClient()
            var progress = false
            for app in self.apps {
                progress = self.drainProxyOutput(to: app) || progress
            }
            if !progress {
                for app in self.apps where self.answerIfDue(app) {
                    progress = true
                    break
                }
            }
            if !progress { return }
        }
    }

    private mutating func topUpPool() {
        var unused = self.apps.filter { !$0.usedByProxy && $0.channel.isActive }.count
        while unused < 2 {
            unused += 1
            let app = try! ModelApp(loop: self.loop, clock: self.context.clock, flushes: self.context.upstreamFlushes)
            self.context.pools[0].release(app.connection, reusable: true)
            self.apps.append(app)
        }
    }

    private mutating func drainClient() {
        while let data = try? self.client.readOutbound(as: IOData.self) {
            if case .byteBuffer(let buffer) = data {
                self.clientOutput += buffer.readableBytesView
            }
        }
        while let data = try? self.nextClient?.readOutbound(as: IOData.self) {
            if case .byteBuffer(let buffer) = data {
                self.nextClientOutput += buffer.readableBytesView
            }
        }
    }

    /// Hands what the proxy wrote to `app` to the app's reader; returns whether there was any.
    private mutating func drainProxyOutput(to app: ModelApp) -> Bool {
        var progress = false
        while let data = try? app.channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(let buffer) = data else { fatalError("the proxy wrote a file region upstream") }
            app.usedByProxy = true
            progress = true
            if app.tunnel != nil {
                app.tunnel! += buffer.readableBytesView
                continue
            }
            do {
                try app.reader.writeInbound(buffer)
            } catch {
                fail(
                    "the app cannot read what the proxy sent: \(error)",
                    "sent so far on this connection (after \(app.requests.count) request heads): \(buffer.readableBytesView.debugString)"
                )
            }
            self.readParts(of: app)
        }
        return progress
    }

    private mutating func readParts(of app: ModelApp) {
        while let part = try? app.reader.readInbound(as: Any.self) {
            switch part {
            case let part as HTTPServerRequestPart:
                switch part {
                case .head(let head):
                    app.requests.append(self.received.count)
                    self.received.append(ReadRequest(head: head))
                case .body(let body):
                    self.received[app.requests.last!].body += body.readableBytesView
                case .end:
                    self.received[app.requests.last!].complete = true
                }
            case let data as IOData:
                // Bytes behind a request the app's reader took for a protocol switch, handed
                // over when the reader leaves (see `answerIfDue`).
                guard case .byteBuffer(let buffer) = data else { continue }
                app.tunnel = (app.tunnel ?? []) + buffer.readableBytesView
            default:
                fatalError("unexpected part from the app's reader: \(part)")
            }
        }
    }

    /// The app answers its oldest request that is ready for an answer; returns whether it did.
    private mutating func answerIfDue(_ app: ModelApp) -> Bool {
        guard app.answered < app.requests.count, app.channel.isActive, app.tunnel == nil else { return false }
        let request = self.received[app.requests[app.answered]]
        let upgrade = self.mode.acceptUpgrade && isUpgrade(request.head)
        guard request.complete || (self.mode.answer == .early && !upgrade) else { return false }
        app.answered += 1
        let isHEAD = request.head.method == .HEAD
        let response: String
        if upgrade {
            response = "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
            // The app's reader steps aside; what it held back is the tunnel's first bytes.
            app.tunnel = []
            let reader = try! app.reader.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            app.reader.pipeline.syncOperations.removeHandler(reader, promise: nil)
            self.loop.run()
            self.readParts(of: app)
        } else {
            switch self.mode.answer {
            case .contentLength, .early:
                response = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n" + (isHEAD ? "" : "ok")
            case .chunked:
                response = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + (isHEAD ? "" : "2\r\nok\r\n0\r\n\r\n")
            case .untilClose:
                response = "HTTP/1.0 200 OK\r\n\r\n" + (isHEAD ? "" : "ok")
            }
        }
        var buffer = app.channel.allocator.buffer(capacity: response.utf8.count)
        buffer.writeString(response)
        _ = try? app.channel.writeInbound(buffer)
        if !upgrade && self.mode.answer == .untilClose {
            app.closedByApp = true
            app.channel.close(promise: nil)
        }
        return true
    }

    private mutating func tearDown() {
        self.drainClient()
        _ = try? self.client.finish(acceptAlreadyClosed: true)
        for app in self.apps {
            _ = try? app.channel.finish(acceptAlreadyClosed: true)
            _ = try? app.reader.finish(acceptAlreadyClosed: true)
        }
        self.context.pools[0].shutdown()
        self.loop.run()
        try? self.loop.syncShutdownGracefully()
        if debugging {
            let apps = self.received.map { "\($0.head.method) \($0.head.uri) complete \($0.complete)" }
            FileHandle.standardError.write(Data("""
                mode: \(self.mode)
                the app read: \(apps)
                the client read: \(self.clientOutput.debugString)
                requests in flight after the run: \(self.lifecycle!.requestsInFlight.load(ordering: .relaxed))

                """.utf8))
        }
    }

    // MARK: The properties

    private func check(against reference: Reference, clientActive: Bool) {
        let server = self.config.server
        // Which of the client's requests must reach the app, in order: each up to the first the
        // proxy refuses (no valid Host, a transfer coding besides chunked, a declared body over
        // max_body_bytes: answered with a 400 or 413 and the connection closed) or the first after
        // which the connection cannot carry another (Connection: close, HTTP/1.0 without
        // keep-alive, a protocol switch).
        func refused(_ request: ReadRequest) -> Bool {
            !MessageFields(HeaderFields(request.head.headers)).isForwardable(version: request.head.version) || request.head.method == .CONNECT
                || (request.head.headers.first(name: "content-length").flatMap(Int.init).map { $0 > server.maxBodyBytes } ?? false)
        }
        func endsConnection(_ request: ReadRequest) -> Bool {
            !request.head.isKeepAlive || isUpgrade(request.head)
        }
        var expected: [Int] = []
        for (index, request) in reference.requests.enumerated() {
            if refused(request) { break }
            expected.append(index)
            if endsConnection(request) { break }
        }
        var matched: [Int] = []
        var next = 0
        for got in self.received {
            guard next < expected.count else {
                let sent = reference.requests
                let why = sent.first(where: refused).map { "the proxy must refuse \($0.head.method) \($0.head.uri) and close" }
                    ?? sent.first(where: endsConnection).map { "\($0.head.method) \($0.head.uri) ends the connection" } ?? "no more requests were sent"
                fail(
                    "the app read \(got.head.method) \(got.head.uri) as its request \(matched.count + 1), "
                        + "but only \(expected.count) of the client's \(sent.count) requests may reach it: \(why)",
                    "client's requests: \(sent.map { "\($0.head.method) \($0.head.uri)" })",
                    "app's requests: \(self.received.map { "\($0.head.method) \($0.head.uri)" })"
                )
            }
            matched.append(expected[next])
            next += 1
        }
        for (got, index) in zip(self.received, matched) {
            let sent = reference.requests[index]
            let name = "request \(index + 1) (\(sent.head.method) \(sent.head.uri))"
            if !sameTarget(got, sent) {
                fail("\(name) reached the app as \(got.head.method) \(got.head.uri)")
            }
            if !sent.body.starts(with: got.body) {
                fail("\(name): the app read a body the client did not send", "client: \(sent.body.debugString)", "app: \(got.body.debugString)")
            }
            if got.complete && (!sent.complete || got.body != sent.body) {
                fail("\(name): the app read a complete body that differs", "client: \(sent.body.debugString)", "app: \(got.body.debugString)")
            }
            if got.body.count > server.maxBodyBytes {
                fail("\(name): \(got.body.count) body bytes reached the app, over max_body_bytes")
            }
            self.checkHeaders(sent: sent.head, got: got.head, name: name)
        }
        // What the proxy sent on a connection it still holds open has been read to the end:
        // no request left short of the body its head announced, no bytes the app cannot place.
        for app in self.apps where app.channel.isActive && app.tunnel == nil {
            if let last = app.requests.last, !self.received[last].complete, reference.requests[matched[last]].complete, clientActive {
                let sent = reference.requests[matched[last]]
                fail(
                    "request \(matched[last] + 1) (\(sent.head.method) \(sent.head.uri)) arrived whole but the app is still waiting for its end",
                    "client body: \(sent.body.debugString)", "app body: \(self.received[last].body.debugString)"
                )
            }
        }
        // A tunnel carries exactly the bytes behind the upgrade request.
        for app in self.apps {
            guard let tunnel = app.tunnel, let last = app.requests.last.map({ matched[$0] }) else { continue }
            if last != reference.requests.count - 1 || !reference.stoppedAfterLast {
                fail("a tunnel opened after request \(last + 1), which the client's decoder did not take for a protocol switch")
            }
            if !reference.leftover.starts(with: tunnel) || (clientActive && app.channel.isActive && tunnel != reference.leftover) {
                fail(
                    "the tunnel carried other bytes than the client sent behind its upgrade request",
                    "client: \(reference.leftover.debugString)", "app: \(tunnel.debugString)"
                )
            }
        }
        // The access log line of any request the proxy decoded is valid JSON.
        for request in reference.requests {
            checkAccessLog(request.head)
        }
    }

    private func checkHeaders(sent: HTTPRequestHead, got: HTTPRequestHead, name: String) {
        let upgrade = isUpgrade(sent)
        func values(_ headers: HTTPHeaders, _ field: String) -> [String] {
            headers.filter { $0.name.lowercased() == field }.map(\.value)
        }
        for field in ["te", "trailer", "keep-alive", "proxy-connection", "expect"] where !values(got.headers, field).isEmpty {
            fail("\(name): hop-by-hop header \(field) reached the app")
        }
        let connection = values(got.headers, "connection")
        if connection != (upgrade ? ["upgrade"] : []) {
            fail("\(name): the app got Connection \(connection)")
        }
        if !upgrade && !values(got.headers, "upgrade").isEmpty {
            fail("\(name): Upgrade reached the app without a protocol switch")
        }
        let te = values(got.headers, "transfer-encoding")
        let cl = values(got.headers, "content-length")
        if te.count + cl.count > 1 || (te.first.map { $0 != "chunked" } ?? false) {
            fail("\(name): the app got framing headers TE \(te), CL \(cl)")
        }
        if values(got.headers, "host") != expectedHost(sent) {
            fail("\(name): Host \(expectedHost(sent)) reached the app as \(values(got.headers, "host"))")
        }
        // Every other header the client sent arrives unchanged, except those its Connection
        // header names.
        let nominated = Set(
            values(sent.headers, "connection").flatMap { $0.split(separator: ",") }
                .map { $0.trimmingCharacters(in: CharacterSet(charactersIn: " \t")).lowercased() }
        ).subtracting(["close", "keep-alive"] + (upgrade ? ["upgrade"] : []))
        let rewritten: Set<String> = [
            "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade", "transfer-encoding", "content-length",
            "expect", "x-forwarded-for", "x-forwarded-proto", "traceparent", "tracestate", "host",
            self.config.trace.requestIDHeader.lowercased(),
        ]
        func ordinary(_ headers: HTTPHeaders) -> [String] {
            headers.compactMap { field in
                let lower = field.name.lowercased()
                return rewritten.contains(lower) || nominated.contains(lower) ? nil : "\(lower): \(field.value)"
            }
        }
        if ordinary(sent.headers) != ordinary(got.headers) {
            fail("\(name): headers changed on the way", "client: \(ordinary(sent.headers))", "app: \(ordinary(got.headers))")
        }
        for field in nominated where !values(got.headers, field).isEmpty && !rewritten.contains(field) {
            fail("\(name): \(field), named in Connection, reached the app")
        }
        // X-Forwarded-For: what the client said, then the client's address.
        let forwarded = values(got.headers, "x-forwarded-for")
        let expected = (values(sent.headers, "x-forwarded-for") + ["192.0.2.7"]).joined(separator: ", ")
        if forwarded != [expected] {
            fail("\(name): X-Forwarded-For \(forwarded), expected \(expected)")
        }
    }
}

/// The client's bytes as a strict decoder with the proxy's limits reads them, in one go.
struct Reference {
    var requests: [ReadRequest] = []
    /// The decoder stopped after the last request (a protocol switch).
    var stoppedAfterLast = false
    /// The bytes behind a protocol switch.
    var leftover: [UInt8] = []

    init(input: [UInt8], limits: NIOHTTPDecoderLimitConfiguration) {
        let channel = EmbeddedChannel()
        defer { _ = try? channel.finish(acceptAlreadyClosed: true) }
        try! channel.pipeline.syncOperations.addHandler(
            ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes, limitConfiguration: limits))
        )
        var buffer = channel.allocator.buffer(capacity: input.count)
        buffer.writeBytes(input)
        let failed = (try? channel.writeInbound(buffer)) == nil
        if !failed {
            let decoder = try! channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            channel.pipeline.syncOperations.removeHandler(decoder, promise: nil)
            channel.embeddedEventLoop.run()
        }
        while let part = try? channel.readInbound(as: Any.self) {
            switch part {
            case let part as HTTPServerRequestPart:
                switch part {
                case .head(let head): self.requests.append(ReadRequest(head: head))
                case .body(let body): self.requests[self.requests.count - 1].body += body.readableBytesView
                case .end: self.requests[self.requests.count - 1].complete = true
                }
            case let data as IOData:
                if case .byteBuffer(let bytes) = data {
                    self.stoppedAfterLast = true
                    self.leftover += bytes.readableBytesView
                }
            default:
                fatalError("unexpected part from the reference decoder: \(part)")
            }
        }
        if !failed, let last = self.requests.last, last.complete, isUpgradeForDecoder(last.head) {
            self.stoppedAfterLast = true
        }
    }
}

/// Whether the app read `got` for the client's `sent`: the same method and target, an
/// absolute-form target (`http://host/path`) in origin-form (`/path`), as RFC 9112 §3.2.2 has
/// the proxy send it.
private func sameTarget(_ got: ReadRequest, _ sent: ReadRequest) -> Bool {
    got.head.method == sent.head.method && got.head.uri == (HeaderRewriting.absoluteForm(sent.head.uri)?.target ?? sent.head.uri)
}

/// The Host the app must read for the client's request: the client's, or the authority of an
/// absolute-form target; with none (HTTP/1.0), the authority or the app's own address.
private func expectedHost(_ sent: HTTPRequestHead) -> [String] {
    let hosts = sent.headers.filter { $0.name.lowercased() == "host" }.map(\.value)
    let authority = HeaderRewriting.absoluteForm(sent.uri).map { String($0.authority) }
    if hosts.isEmpty { return [authority ?? upstreamAddress.hostField] }
    guard let authority else { return hosts }
    return hosts.map { _ in authority }
}

/// What the proxy takes for a protocol switch.
private func isUpgrade(_ head: HTTPRequestHead) -> Bool {
    MessageFields(HeaderFields(head.headers)).requestsUpgrade
}

/// What llhttp takes for one: CONNECT, or Upgrade named in Connection.
private func isUpgradeForDecoder(_ head: HTTPRequestHead) -> Bool {
    head.method == .CONNECT || isUpgrade(head)
}

private func checkAccessLog(_ head: HTTPRequestHead) {
    let record = AccessLogRecord(
        time: Date(timeIntervalSince1970: 0),
        requestID: "r",
        traceID: nil,
        method: head.method.rawValue,
        path: String(Router.path(of: head.uri)),
        route: "default",
        status: 200,
        reason: "ok",
        duration: .zero,
        upstreamDuration: nil,
        attempts: 1,
        bytesIn: 0,
        bytesOut: 0,
        client: "192.0.2.7"
    )
    let line = record.jsonLine()
    guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
        fail("the access log line is not JSON: \(line)")
    }
    if object["method"] as? String != head.method.rawValue || object["path"] as? String != String(Router.path(of: head.uri)) {
        fail("the access log line does not round-trip: \(line)")
    }
}

/// A finding: say what broke, then trap so libFuzzer saves the input.
private func fail(_ message: String, _ details: String...) -> Never {
    var text = "FUZZ PROPERTY VIOLATED: \(message)\n"
    for detail in details { text += "  \(detail)\n" }
    FileHandle.standardError.write(Data(text.utf8))
    fatalError(message)
}

extension Sequence<UInt8> {
    /// The bytes as a Swift string literal would show them.
    var debugString: String {
        String(decoding: Array(self), as: UTF8.self).debugDescription
    }
}
