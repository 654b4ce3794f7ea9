import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A request as the raw app has it so far: the bytes since the previous request on its
/// connection ended, head and (part of the) body.
struct RawRequest: Sendable {
    /// The connection's number, from 1, in the order the app accepted them.
    var connection: Int
    /// The request's index on its connection, from 0.
    var index: Int
    /// The request's index among all requests the app saw, from 0.
    var sequence: Int
    var bytes: [UInt8]
    /// The head and the whole body (by Content-Length or chunked framing) are here.
    var isComplete: Bool

    /// The head's text, once all of it arrived.
    var head: String? {
        RawBackend.headEnd(in: self.bytes).map { String(decoding: self.bytes[..<$0], as: UTF8.self) }
    }

    var requestLine: String? { self.head?.components(separatedBy: "\r\n").first }

    /// The request target, e.g. `/a?b`.
    var target: String? {
        guard let line = self.requestLine else { return nil }
        let parts = line.split(separator: " ")
        return parts.count >= 2 ? String(parts[1]) : nil
    }

    func header(_ name: String) -> String? {
        guard let head = self.head else { return nil }
        for line in head.components(separatedBy: "\r\n").dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            if line[..<colon].lowercased() == name.lowercased() {
                return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
        }
        return nil
    }
}

/// One thing the raw app does on a connection, in order.
enum RawStep: Sendable {
    /// Writes these bytes as they are.
    case write([UInt8])
    case delay(Duration)
    /// Closes the connection (FIN).
    case close
    /// Holds back what is written next until the connection closes (TCP_CORK): the bytes and
    /// the FIN then leave in one segment, and the proxy reads them, and the end, in one go.
    case cork
    /// Closes with a reset: SO_LINGER 0, then close.
    case reset
    /// Stops answering: the connection stays open, and what arrives later is only recorded.
    case hang
    /// Stops reading the connection: what the proxy sends piles up in the kernel's buffers
    /// and then in the proxy's, as with an app stuck in its own code.
    case stopReading

    static func text(_ text: String) -> RawStep { .write(Array(text.utf8)) }
}

/// What the raw app does with a request: nil waits for more bytes of it (the script is asked
/// again on every read); steps answer it. Once the steps ran (and none closed or hung), the
/// request's bytes are consumed — all bytes so far if it was answered before it was whole —
/// and the next request on the connection starts.
typealias RawScript = @Sendable (RawRequest) -> [RawStep]?

/// What the raw app saw on one connection.
struct RawConnectionRecord: Sendable {
    var number: Int
    /// Every byte received, in order.
    var received: [UInt8] = []
    /// The request line of every request head that arrived, in order.
    var requestLines: [String] = []
    /// Closed, by either side.
    var closed = false

    var receivedText: String { String(decoding: self.received, as: UTF8.self) }
}

struct RawBackendState: Sendable {
    var connections: [RawConnectionRecord] = []
    var channels: [any Channel] = []
    var requestHeads = 0
}

/// A raw-TCP app for the proxy to stand in front of: its answers are whatever bytes the test's
/// script says (a broken status line, a lying Content-Length, a reset halfway, a head without
/// end), and it records each connection it accepted and what arrived on it, so a test can check
/// that a connection which misbehaved never carried another request.
final class RawBackend: Sendable {
    private let channel: any Channel
    private let state: NIOLockedValueBox<RawBackendState>

    private init(channel: any Channel, state: NIOLockedValueBox<RawBackendState>) {
        self.channel = channel
        self.state = state
    }

    /// Listens on 127.0.0.1 with a port the system picks.
    static func start(_ script: @escaping RawScript) async throws -> RawBackend {
        let state = NIOLockedValueBox(RawBackendState())
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                let number = state.withLockedValue { state in
                    state.connections.append(RawConnectionRecord(number: state.connections.count + 1))
                    state.channels.append(channel)
                    return state.connections.count
                }
                channel.closeFuture.whenComplete { _ in
                    state.withLockedValue { $0.connections[number - 1].closed = true }
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        RawBackendHandler(connection: number, script: script, state: state)
                    )
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
        return RawBackend(channel: channel, state: state)
    }

    var port: Int { self.channel.localAddress!.port! }
    var connectionsAccepted: Int { self.state.withLockedValue { $0.connections.count } }
    var connections: [RawConnectionRecord] { self.state.withLockedValue { $0.connections } }
    /// Request heads received, over all connections.
    var requestCount: Int { self.state.withLockedValue { $0.requestHeads } }
    /// `number` from 1.
    func connection(_ number: Int) -> RawConnectionRecord? {
        self.state.withLockedValue { number >= 1 && number <= $0.connections.count ? $0.connections[number - 1] : nil }
    }

    func shutdown() async throws {
        let children = self.state.withLockedValue { $0.channels }
        for child in children {
            try? await child.close()
        }
        try await self.channel.close()
    }

    // MARK: Framing

    static func headEnd(in bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for index in 0...(bytes.count - 4)
        where bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10 {
            return index
        }
        return nil
    }

    /// The length of the whole request at the front of `bytes`, nil until all of it is here.
    static func requestLength(in bytes: [UInt8]) -> Int? {
        guard let end = self.headEnd(in: bytes) else { return nil }
        let bodyStart = end + 4
        let head = String(decoding: bytes[..<end], as: UTF8.self).lowercased()
        var contentLength = 0
        var chunked = false
        for line in head.components(separatedBy: "\r\n").dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon]
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if name == "content-length" { contentLength = Int(value) ?? 0 }
            if name == "transfer-encoding" && value.contains("chunked") { chunked = true }
        }
        guard chunked else {
            return bytes.count >= bodyStart + contentLength ? bodyStart + contentLength : nil
        }
        var position = bodyStart
        while true {
            guard let lineEnd = self.find([13, 10], in: bytes, from: position) else { return nil }
            let sizeText = String(decoding: bytes[position..<lineEnd], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else { return nil }
            position = lineEnd + 2
            if size == 0 {
                // Trailers, if any, then an empty line.
                while true {
                    guard let end = self.find([13, 10], in: bytes, from: position) else { return nil }
                    if end == position { return end + 2 }
                    position = end + 2
                }
            }
            position += size + 2
            if position > bytes.count { return nil }
        }
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard haystack.count >= needle.count, start <= haystack.count - needle.count else { return nil }
        for index in start...(haystack.count - needle.count) where Array(haystack[index..<index + needle.count]) == needle {
            return index
        }
        return nil
    }
}

/// One connection of the raw app: buffers what arrives, asks the script, runs its steps.
private final class RawBackendHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let connection: Int
    private let script: RawScript
    private let state: NIOLockedValueBox<RawBackendState>
    private var buffer: [UInt8] = []
    private var index = 0
    private var sequence: Int?
    /// Steps of an answer are running.
    private var busy = false
    /// Closed, reset or hung: nothing more is answered.
    private var done = false

    init(connection: Int, script: @escaping RawScript, state: NIOLockedValueBox<RawBackendState>) {
        self.connection = connection
        self.script = script
        self.state = state
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = Array(self.unwrapInboundIn(data).readableBytesView)
        self.state.withLockedValue { $0.connections[self.connection - 1].received += bytes }
        guard !self.done else { return }
        self.buffer += bytes
        self.process(context: context)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.done = true
        context.close(promise: nil)
    }

    private func process(context: ChannelHandlerContext) {
        guard !self.busy, !self.done, !self.buffer.isEmpty else { return }
        let length = RawBackend.requestLength(in: self.buffer)
        if self.sequence == nil, let end = RawBackend.headEnd(in: self.buffer) {
            let line = String(decoding: self.buffer[..<end], as: UTF8.self).components(separatedBy: "\r\n").first ?? ""
            self.sequence = self.state.withLockedValue { state in
                state.connections[self.connection - 1].requestLines.append(line)
                state.requestHeads += 1
                return state.requestHeads - 1
            }
        }
        let request = RawRequest(
            connection: self.connection,
            index: self.index,
            sequence: self.sequence ?? -1,
            bytes: length.map { Array(self.buffer.prefix($0)) } ?? self.buffer,
            isComplete: length != nil
        )
        guard let steps = self.script(request) else { return }
        self.busy = true
        self.run(steps, from: 0, consuming: length ?? self.buffer.count, context: context)
    }

    private func run(_ steps: [RawStep], from start: Int, consuming count: Int, context: ChannelHandlerContext) {
        var position = start
        while position < steps.count {
            switch steps[position] {
            case .write(let bytes):
                context.writeAndFlush(self.wrapOutboundOut(ByteBuffer(bytes: bytes)), promise: nil)
            case .delay(let duration):
                let next = position + 1
                let bound = context.loopBound
                context.eventLoop.assumeIsolated().scheduleTask(in: TimeAmount(duration)) {
                    guard !self.done, bound.value.channel.isActive else { return }
                    self.run(steps, from: next, consuming: count, context: bound.value)
                }
                return
            case .close:
                self.done = true
                context.close(promise: nil)
                return
            case .cork:
                try! context.channel.syncOptions!.setOption(.tcpOption(.init(rawValue: TCP_CORK)), value: 1)
            case .reset:
                self.done = true
                let provider = context.channel as? any SocketOptionProvider
                let bound = context.loopBound
                if let provider {
                    provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).assumeIsolated().whenComplete { _ in
                        bound.value.close(promise: nil)
                    }
                } else {
                    context.close(promise: nil)
                }
                return
            case .hang:
                self.done = true
                return
            case .stopReading:
                self.done = true
                context.channel.setOption(.autoRead, value: false).whenFailure { _ in }
                return
            }
            position += 1
        }
        self.buffer.removeFirst(min(count, self.buffer.count))
        self.index += 1
        self.sequence = nil
        self.busy = false
        self.process(context: context)
    }
}
