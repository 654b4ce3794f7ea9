import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A response as a raw client saw it on the wire.
struct RawResponse: Sendable {
    var status: Int
    var version: String
    var headers: [(name: String, value: String)]
    var body: [UInt8]

    var bodyString: String { String(decoding: self.body, as: UTF8.self) }

    func header(_ name: String) -> String? {
        self.headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }
}

struct RawClientError: Error, CustomStringConvertible {
    var description: String
}

/// A byte-level HTTP client for tests: sends exactly the bytes a test writes (malformed and
/// pipelined requests included) and parses responses from the raw stream.
final class RawClient: Sendable {
    private let channel: any Channel
    private let inbox: NIOLockedValueBox<Inbox>
    private let autoRead: Bool

    private init(channel: any Channel, inbox: NIOLockedValueBox<Inbox>, autoRead: Bool) {
        self.channel = channel
        self.inbox = inbox
        self.autoRead = autoRead
    }

    /// - Parameter autoRead: false for a slow client, which reads only when a test asks.
    static func connect(port: Int, autoRead: Bool = true) async throws -> RawClient {
        let inbox = NIOLockedValueBox(Inbox())
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.autoRead, value: autoRead)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(InboxHandler(inbox: inbox))
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .get()
        return RawClient(channel: channel, inbox: inbox, autoRead: autoRead)
    }

    /// One request on a new connection to `port`, closed once the answer is read.
    static func request(port: Int, _ raw: String, timeout: Duration = .seconds(10)) async throws -> RawResponse {
        let client = try await Self.connect(port: port)
        defer { Task { await client.close() } }
        try await client.send(raw)
        return try await client.readResponse(timeout: timeout)
    }

    /// The clients whose connections the server has not closed, once no more than `limit` are
    /// open, or as they are after `timeout`: a server that sheds connections over a limit
    /// closes them as it accepts them, which takes a moment after the clients connected.
    static func stillOpen(_ clients: [RawClient], settlingAt limit: Int, timeout: Duration = .seconds(10)) async -> [RawClient] {
        var open: [RawClient] = []
        try? await eventually(timeout: timeout) {
            open = []
            for client in clients where !(try await client.waitForClose(timeout: .milliseconds(1))) { open.append(client) }
            return open.count <= limit
        }
        return open
    }

    func send(_ text: String) async throws {
        try await self.send(Array(text.utf8))
    }

    func send(_ bytes: [UInt8]) async throws {
        try await self.channel.writeAndFlush(ByteBuffer(bytes: bytes))
    }

    func close() async {
        try? await self.channel.close()
    }

    /// Reads one whole response; bytes after it stay for the next call.
    func readResponse(timeout: Duration = .seconds(10), forHead: Bool = false) async throws -> RawResponse {
        try await self.waitFor(timeout: timeout, what: "a response") { inbox in
            guard var parser = ResponseParser(inbox.bytes) else { return nil }
            guard let response = parser.parseWhole(isHeadRequest: forHead, closed: inbox.closed) else { return nil }
            inbox.bytes.removeFirst(parser.consumed)
            return response
        }
    }

    /// Reads a response head; its body stays buffered for `readAvailable` and friends.
    func readResponseHead(timeout: Duration = .seconds(10)) async throws -> RawResponse {
        try await self.waitFor(timeout: timeout, what: "a response head") { inbox in
            guard let parser = ResponseParser(inbox.bytes) else { return nil }
            inbox.bytes.removeFirst(parser.consumed)
            return parser.head
        }
    }

    /// Whatever has arrived (up to `atMost` bytes; the rest stays), once at least one byte has.
    func readAvailable(atMost: Int = .max, timeout: Duration = .seconds(10)) async throws -> [UInt8] {
        try await self.waitFor(timeout: timeout, what: "bytes") { inbox in
            guard !inbox.bytes.isEmpty else { return nil }
            let count = min(atMost, inbox.bytes.count)
            defer { inbox.bytes.removeFirst(count) }
            return Array(inbox.bytes.prefix(count))
        }
    }

    func readExactly(_ count: Int, timeout: Duration = .seconds(10)) async throws -> [UInt8] {
        try await self.waitFor(timeout: timeout, what: "\(count) bytes") { inbox in
            guard inbox.bytes.count >= count else { return nil }
            defer { inbox.bytes.removeFirst(count) }
            return Array(inbox.bytes.prefix(count))
        }
    }

    /// Whether the peer closed within `timeout` (bytes it sent before stay readable).
    func waitForClose(timeout: Duration = .seconds(10)) async throws -> Bool {
        do {
            return try await self.waitFor(timeout: timeout, what: "a close") { $0.closed ? true : nil }
        } catch is RawClientError {
            return false
        }
    }

    /// Reads a Content-Length response as a slow client would: the body goes to `consume`
    /// piece by piece and is not kept, with a pause after every `pauseEvery` bytes.
    func streamBody(
        pauseEvery: Int,
        pause: Duration,
        timeout: Duration = .seconds(120),
        consume: ([UInt8]) -> Void
    ) async throws -> RawResponse {
        let head = try await self.readResponseHead(timeout: timeout)
        guard let length = head.header("content-length").flatMap(Int.init) else {
            throw RawClientError(description: "streamBody needs a Content-Length response")
        }
        var received = 0
        var sincePause = 0
        while received < length {
            let used = try await self.readAvailable(atMost: length - received, timeout: timeout)
            received += used.count
            sincePause += used.count
            consume(used)
            if sincePause >= pauseEvery {
                sincePause = 0
                try await Task.sleep(for: pause)
            }
        }
        return head
    }

    /// Polls the inbox until `take` returns a value, reading from the socket on demand when
    /// auto-read is off.
    private func waitFor<T>(timeout: Duration, what: String, _ take: (inout Inbox) -> T?) async throws -> T {
        let deadline = ContinuousClock.now + timeout
        while true {
            // One look under the lock: a close that lands between taking and checking would
            // otherwise end the wait as a failure, with what it waited for already there.
            let (value, closed, count, prefix) = self.inbox.withLockedValue { inbox in
                (take(&inbox), inbox.closed, inbox.bytes.count, inbox.bytes.prefix(200))
            }
            if let value {
                return value
            }
            if closed || ContinuousClock.now >= deadline {
                let reason = closed ? "connection closed" : "timed out after \(timeout)"
                throw RawClientError(
                    description: "\(reason) waiting for \(what); have \(count) bytes: \(String(decoding: prefix, as: UTF8.self).debugDescription)"
                )
            }
            if !self.autoRead {
                self.channel.read()
            }
            try await Task.sleep(for: .milliseconds(1))
        }
    }
}

/// Bytes received and whether the peer closed.
struct Inbox: Sendable {
    var bytes: [UInt8] = []
    var closed = false
}

/// Collects what a connection receives into an `Inbox`; a reset counts as a close.
final class InboxHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let inbox: NIOLockedValueBox<Inbox>

    init(inbox: NIOLockedValueBox<Inbox>) {
        self.inbox = inbox
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = self.unwrapInboundIn(data)
        self.inbox.withLockedValue { $0.bytes.append(contentsOf: buffer.readableBytesView) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event {
            self.inbox.withLockedValue { $0.closed = true }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.inbox.withLockedValue { $0.closed = true }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A reset from the peer: as good as a close for a test.
        self.inbox.withLockedValue { $0.closed = true }
        context.close(promise: nil)
    }
}
