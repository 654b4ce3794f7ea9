import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// One connection of the fixture app. Paths:
/// - `/echo`: the request body back, with `x-echo-method`, `x-echo-uri`.
/// - `/headers`: 200 (the test reads what arrived from `requestsReceived`).
/// - `/status/N`: status N with body "status N" (none for 204 and 304).
/// - `/delay/MS`: "delayed" after MS milliseconds.
/// - `/hang`: never answers. `/close`: closes without answering. `/reset`: closes with RST.
/// - `/head-then-close?length=N`: a head announcing N bytes, 10 of them, then a close.
/// - `/head-only-then-close`: a head announcing 100 bytes, none of them, then a close.
/// - `/stream?chunks=N&interval=MS`: chunked, "chunk i\n" every MS ms.
/// - `/sse?events=N&interval=MS`: text/event-stream, "data: event i\n\n" every MS ms.
/// - `/bytes/N`: N bytes (byte i = i % 251), written only while the socket takes them.
/// - `/keepalive-close`: "bye" with `connection: close`, then a close.
/// - `/close-if-reused`: closes without answering when the connection served a request before
///   (an app whose keep-alive timeout just ran out), else "fresh".
/// - `/ws` with `Upgrade`: 101, then a byte echo.
/// - `/flaky/KEY?fail=N&status=S&delay=MS&hang=1`: the first N requests for KEY get status S
///   (503), after MS ms (0), then "recovered" (or, with `hang=1`, no answer).
/// - `/switchable`: 500 while the test has set the fixture failing, else "ok".
/// - anything else: "ok".
/// Every response carries `x-fixture-connection`, the connection's number.
final class FixtureHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let connectionNumber: Int
    private let state: NIOLockedValueBox<FixtureState>
    private var request: HTTPRequestHead?
    private var body: [UInt8] = []
    /// Bytes of `/bytes/N` still to write; written as the socket drains.
    private var bytesToSend = 0
    private var bytesSent = 0
    private var requestsAnswered = 0

    init(connectionNumber: Int, state: NIOLockedValueBox<FixtureState>) {
        self.connectionNumber = connectionNumber
        self.state = state
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.request = head
            self.body = []
            let path = Self.path(head.uri)
            if path == "/close" {
                context.close(promise: nil)
            } else if path == "/reset" {
                // SO_LINGER with a zero timeout turns the close into a reset.
                let provider = context.channel as? any SocketOptionProvider
                provider?.setSoLinger(linger(l_onoff: 1, l_linger: 0)).assumeIsolated().whenComplete { _ in
                    context.close(promise: nil)
                }
            }
        case .body(var buffer):
            self.body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            guard let head = self.request else { return }
            self.state.withLockedValue {
                $0.requests.append(
                    ReceivedRequest(method: head.method.rawValue, uri: head.uri, headers: head.headers.map { ($0.name, $0.value) }, body: self.body)
                )
            }
            self.respond(to: head, context: context)
            self.requestsAnswered += 1
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        self.writeBytesWhileWritable(context: context)
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private static func path(_ uri: String) -> Substring {
        uri.split(separator: "?", maxSplits: 1).first ?? ""
    }

    private static func query(_ uri: String, _ name: String, default value: Int) -> Int {
        guard let query = uri.split(separator: "?", maxSplits: 1).dropFirst().first else { return value }
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            if parts.count == 2, parts[0] == name, let number = Int(parts[1]) { return number }
        }
        return value
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = Self.path(head.uri)
        let segments = path.split(separator: "/")
        switch segments.first {
        case "echo":
            self.send(.ok, body: self.body, extra: [("x-echo-method", head.method.rawValue), ("x-echo-uri", head.uri)], context: context)
        case "status":
            let code = segments.count > 1 ? Int(segments[1]) ?? 200 : 200
            let status = HTTPResponseStatus(statusCode: code)
            let bodyless = code == 204 || code == 304
            self.send(status, body: bodyless ? [] : Array("status \(code)".utf8), headOnly: bodyless, context: context)
        case "delay":
            let milliseconds = segments.count > 1 ? Int64(segments[1]) ?? 0 : 0
            self.state.withLockedValue { state in
                state.delaysInFlight += 1
                state.maxDelaysInFlight = max(state.maxDelaysInFlight, state.delaysInFlight)
            }
            context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(milliseconds)) {
                self.state.withLockedValue { $0.delaysInFlight -= 1 }
                self.send(.ok, body: Array("delayed".utf8), context: context)
            }
        case "hang", "close", "reset":
            break
        case "flaky":
            let key = segments.count > 1 ? String(segments[1]) : ""
            let seen = self.state.withLockedValue { state in
                state.flakyCounts[key, default: 0] += 1
                return state.flakyCounts[key]!
            }
            if seen <= Self.query(head.uri, "fail", default: 1) {
                let code = Self.query(head.uri, "status", default: 503)
                let delay = Int64(Self.query(head.uri, "delay", default: 0))
                context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(delay)) {
                    self.send(HTTPResponseStatus(statusCode: code), body: Array("failure \(seen)".utf8), context: context)
                }
            } else if Self.query(head.uri, "hang", default: 0) == 1 {
                break
            } else {
                self.send(.ok, body: Array("recovered".utf8), context: context)
            }
        case "switchable":
            let failing = self.state.withLockedValue { $0.failing }
            self.send(failing ? .internalServerError : .ok, body: Array((failing ? "failing" : "ok").utf8), context: context)
        case "close-if-reused" where self.requestsAnswered > 0:
            context.close(promise: nil)
        case "close-if-reused":
            self.send(.ok, body: Array("fresh".utf8), context: context)
        case "head-only-then-close":
            var headers = self.baseHeaders()
            headers.add(name: "content-length", value: "100")
            context.writeAndFlush(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            context.close(promise: nil)
        case "head-then-close":
            var headers = self.baseHeaders()
            headers.add(name: "content-length", value: String(Self.query(head.uri, "length", default: 1000)))
            context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "0123456789")))), promise: nil)
            context.close(promise: nil)
        case "stream", "sse":
            let isSSE = segments.first == "sse"
            let count = Self.query(head.uri, isSSE ? "events" : "chunks", default: 3)
            let interval = Int64(Self.query(head.uri, "interval", default: 50))
            var headers = self.baseHeaders()
            headers.add(name: "transfer-encoding", value: "chunked")
            if isSSE { headers.add(name: "content-type", value: "text/event-stream") }
            context.writeAndFlush(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            self.streamPieces(index: 0, count: count, interval: interval, isSSE: isSSE, context: context)
        case "bytes":
            let length = segments.count > 1 ? Int(segments[1]) ?? 0 : 0
            var headers = self.baseHeaders()
            headers.add(name: "content-length", value: String(length))
            context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers))), promise: nil)
            if head.method == .HEAD {
                context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
                return
            }
            self.bytesToSend = length
            self.bytesSent = 0
            self.writeBytesWhileWritable(context: context)
        case "keepalive-close":
            var headers = self.baseHeaders()
            headers.add(name: "connection", value: "close")
            headers.add(name: "content-length", value: "3")
            context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
            context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "bye")))), promise: nil)
            context.writeAndFlush(self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        case "ws" where head.headers.contains(name: "upgrade"):
            self.upgrade(head, context: context)
        default:
            self.send(.ok, body: Array("ok".utf8), context: context)
        }
    }

    private func baseHeaders() -> HTTPHeaders {
        HTTPHeaders([("x-fixture-connection", String(self.connectionNumber))])
    }

    private func send(
        _ status: HTTPResponseStatus,
        body: [UInt8],
        extra: [(String, String)] = [],
        headOnly: Bool = false,
        context: ChannelHandlerContext
    ) {
        var headers = self.baseHeaders()
        headers.add(contentsOf: extra)
        if !headOnly { headers.add(name: "content-length", value: String(body.count)) }
        let isHead = self.request?.method == .HEAD
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if !body.isEmpty && !isHead {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
        }
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
    }

    private func streamPieces(index: Int, count: Int, interval: Int64, isSSE: Bool, context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        guard index < count else {
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
            return
        }
        let text = isSSE ? "data: event \(index)\n\n" : "chunk \(index)\n"
        context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
        context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(interval)) {
            self.streamPieces(index: index + 1, count: count, interval: interval, isSSE: isSSE, context: context)
        }
    }

    private func writeBytesWhileWritable(context: ChannelHandlerContext) {
        guard self.bytesToSend > 0 else { return }
        while self.bytesSent < self.bytesToSend && context.channel.isWritable {
            let size = min(64 * 1024, self.bytesToSend - self.bytesSent)
            var buffer = context.channel.allocator.buffer(capacity: size)
            let start = self.bytesSent
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { pointer in
                for offset in 0..<size {
                    pointer[offset] = UInt8((start + offset) % 251)
                }
                return size
            }
            self.bytesSent += size
            context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        if self.bytesSent == self.bytesToSend {
            self.bytesToSend = 0
            context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    /// Answers 101 and turns the connection into a byte echo; bytes that came right behind the
    /// request leave the decoder as it is removed and are echoed too.
    private func upgrade(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = self.baseHeaders()
        headers.add(name: "upgrade", value: head.headers.first(name: "upgrade") ?? "websocket")
        headers.add(name: "connection", value: "upgrade")
        context.writeAndFlush(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .switchingProtocols, headers: headers))), promise: nil)
        // Switch once the decoder that delivered this request has returned.
        context.eventLoop.assumeIsolated().execute {
            let pipeline = context.pipeline.syncOperations
            do {
                try pipeline.addHandler(ByteEchoHandler())
                try pipeline.removeHandler(pipeline.handler(type: HTTPServerPipelineHandler.self), promise: nil)
                try pipeline.removeHandler(pipeline.handler(type: HTTPResponseEncoder.self), promise: nil)
                pipeline.removeHandler(self, promise: nil)
                try pipeline.removeHandler(pipeline.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self), promise: nil)
            } catch {
                context.close(promise: nil)
            }
        }
    }
}

/// After an upgrade: every byte back to the sender.
private final class ByteEchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }
}
