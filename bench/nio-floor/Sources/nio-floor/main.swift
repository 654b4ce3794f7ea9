import CNIOLLHTTP
import Glibc
import NIOCore
import NIOHTTP1
import NIOPosix

// A measuring stick, not a proxy: the cost of the machinery Breakwater is built on, with none of
// Breakwater's own work. One event loop; NIO's HTTP/1 decoders on both sides, as Breakwater has
// them; each client connection paired with one connection to the app, opened on the same loop;
// heads copied to the other side verbatim in one buffer; one flush per message. No routing,
// policies, header rewriting, trace ids, metrics or timeouts, and only bodies framed by length.
// `bench/run.sh --floor` measures it beside the proxies; README.md ("Benchmarks") has the figures.
//
// With `--bytes` it relays bytes with no HTTP at all: the cost of NIO's channels alone, the least
// any proxy on NIO can cost, whatever parses its HTTP. With `--llhttp` it relays bytes too, but
// runs each side's messages through llhttp, the parser NIO's HTTP/1 decoders wrap, called
// directly, and makes each head into NIO's head type as they do: what parsing costs without
// NIO's decoders around it. (`CNIOLLHTTP` is a module inside swift-nio, not one of its
// products: fine for a measuring stick, a dependency on NIO's internals for a proxy.)
//
//   nio-floor LISTEN_PORT APP_PORT [--bytes | --llhttp]

enum Mode: String { case http = "", bytes = "--bytes", llhttp = "--llhttp" }
let arguments = CommandLine.arguments
guard (3...4).contains(arguments.count), let listenPort = Int(arguments[1]), let appPort = Int(arguments[2]),
      let mode = Mode(rawValue: arguments.count == 4 ? arguments[3] : "")
else {
    fatalError("usage: nio-floor LISTEN_PORT APP_PORT [--bytes | --llhttp]")
}
// SIGTERM is taken by the main thread below and ends the process with a normal exit, which
// bench/request-cost.sh's allocation counter needs to report; blocked before any thread starts.
var terminate = sigset_t()
sigemptyset(&terminate)
sigaddset(&terminate, SIGTERM)
pthread_sigmask(SIG_BLOCK, &terminate, nil)
let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)

/// NIO's response decoder, told of each request's method directly (as Breakwater's is).
struct ResponseDecoder: ByteToMessageDecoder {
    typealias InboundOut = HTTPClientResponsePart
    let decoder = HTTPResponseDecoder(leftOverBytesStrategy: .dropBytes)
    static let get = HTTPRequestHead(version: .http1_1, method: .GET, uri: "")
    static let head = HTTPRequestHead(version: .http1_1, method: .HEAD, uri: "")

    func requestSent(method: HTTPMethod) {
        self.decoder.write(data: .head(method == .HEAD ? Self.head : Self.get))
    }
    func decoderAdded(context: ChannelHandlerContext) { self.decoder.decoderAdded(context: context) }
    func decoderRemoved(context: ChannelHandlerContext) { self.decoder.decoderRemoved(context: context) }
    func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        try self.decoder.decode(context: context, buffer: &buffer)
    }
    func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try self.decoder.decodeLast(context: context, buffer: &buffer, seenEOF: seenEOF)
    }
}

extension ByteBuffer {
    /// The fields and the blank line after them, copied in one pass into memory reserved once
    /// (Breakwater's `HeadWriter` does the same): NIO's `writeString` per piece pays a bounds and
    /// an exclusivity check for each of a field's four pieces.
    mutating func writeFields(_ headers: HTTPHeaders) {
        let needed = headers.reduce(2) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
        self.writeWithUnsafeMutableBytes(minimumWritableBytes: needed) { memory in
            var cursor = memory.baseAddress!
            for (name, value) in headers {
                cursor = cursor.copying(name, then: UInt8(ascii: ":"), UInt8(ascii: " "))
                cursor = cursor.copying(value, then: UInt8(ascii: "\r"), UInt8(ascii: "\n"))
            }
            cursor.storeBytes(of: UInt8(ascii: "\r"), as: UInt8.self)
            (cursor + 1).storeBytes(of: UInt8(ascii: "\n"), as: UInt8.self)
            return cursor - memory.baseAddress! + 2
        }
    }
}

extension UnsafeMutableRawPointer {
    /// Copies `text` and two bytes after it here; returns where the next byte goes.
    func copying(_ text: String, then first: UInt8, _ second: UInt8) -> UnsafeMutableRawPointer {
        var text = text
        let count = text.withUTF8 { bytes in
            self.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
            return bytes.count
        }
        self.storeBytes(of: first, toByteOffset: count, as: UInt8.self)
        self.storeBytes(of: second, toByteOffset: count + 1, as: UInt8.self)
        return self + count + 2
    }
}

/// The client's side: each request goes to the paired app connection, its answer comes back.
final class ClientHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    private var app: AppHandler?
    private var waiting: [HTTPServerRequestPart] = []
    private var connecting = false
    private let appPort: Int

    init(appPort: Int) { self.appPort = appPort }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = self.unwrapInboundIn(data)
        guard let app = self.app else {
            self.waiting.append(part)
            self.connect(context: context)
            return
        }
        app.send(part)
    }

    private func connect(context: ChannelHandlerContext) {
        guard !self.connecting else { return }
        self.connecting = true
        let client = context.channel
        ClientBootstrap(group: context.eventLoop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let decoder = ResponseDecoder()
                    let app = AppHandler(client: client, decoder: decoder)
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(decoder))
                    try channel.pipeline.syncOperations.addHandler(app)
                }
            }
            .connect(host: "127.0.0.1", port: self.appPort)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    let app = try! channel.pipeline.syncOperations.handler(type: AppHandler.self)
                    self.app = app
                    for part in self.waiting { app.send(part) }
                    self.waiting = []
                case .failure:
                    client.close(promise: nil)
                }
            }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.app?.close()
        context.fireChannelInactive()
    }
}

/// The app's side of a pair.
final class AppHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    private let client: Channel
    private let decoder: ResponseDecoder
    private var context: ChannelHandlerContext!
    private var pendingHead: ByteBuffer?

    init(client: Channel, decoder: ResponseDecoder) {
        self.client = client
        self.decoder = decoder
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func send(_ part: HTTPServerRequestPart) {
        guard let context = self.context else { return }
        switch part {
        case .head(let head):
            var bytes = context.channel.allocator.buffer(capacity: 1024)
            bytes.writeString(head.method.rawValue)
            bytes.writeStaticString(" ")
            bytes.writeString(head.uri)
            bytes.writeStaticString(" HTTP/1.1\r\n")
            bytes.writeFields(head.headers)
            self.decoder.requestSent(method: head.method)
            context.write(NIOAny(IOData.byteBuffer(bytes)), promise: nil)
        case .body(let body):
            context.write(NIOAny(IOData.byteBuffer(body)), promise: nil)
        case .end:
            context.flush()
        }
    }

    func close() { self.context?.close(promise: nil) }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            var bytes = context.channel.allocator.buffer(capacity: 1024)
            bytes.writeStaticString("HTTP/1.1 ")
            bytes.writeString(String(head.status.code))
            bytes.writeStaticString(" ")
            bytes.writeString(head.status.reasonPhrase)
            bytes.writeStaticString("\r\n")
            bytes.writeFields(head.headers)
            self.pendingHead = bytes
        case .body(var body):
            if var head = self.pendingHead {
                head.writeBuffer(&body)
                self.pendingHead = nil
                self.client.write(IOData.byteBuffer(head), promise: nil)
            } else {
                self.client.write(IOData.byteBuffer(body), promise: nil)
            }
        case .end:
            if let head = self.pendingHead {
                self.pendingHead = nil
                self.client.write(IOData.byteBuffer(head), promise: nil)
            }
            self.client.flush()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.client.close(promise: nil)
    }
}

/// `--bytes` and `--llhttp`: one side of a pair of connections relaying whatever they read to
/// each other, with a flush at the end of each read burst, as a proxy flushes once per message.
final class ByteRelay: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private var peer: Channel?
    private var waiting: [ByteBuffer] = []
    private var wrote = false
    /// The app's port on the client's side, which opens the app's on its first read.
    private let appPort: Int?
    /// With `--llhttp`, what each side's bytes are parsed with before they are relayed.
    private let parser: UnsafeMutablePointer<llhttp_t>?
    private let settings: UnsafeMutablePointer<llhttp_settings_t>?
    /// The head being parsed, taken from llhttp's callbacks as NIO's decoders take it.
    private var target = ""
    private var fieldName = ""
    private var fields: [(String, String)] = []
    /// What was made of the heads, kept so that making them is not optimised away.
    private var headsMade = 0

    init(appPort: Int?, parsing type: llhttp_type_t?) {
        self.appPort = appPort
        guard let type else {
            (self.parser, self.settings) = (nil, nil)
            return
        }
        let settings = UnsafeMutablePointer<llhttp_settings_t>.allocate(capacity: 1)
        c_nio_llhttp_settings_init(settings)
        // A piece split across two reads would come in two calls; the floor's messages never are.
        settings.pointee.on_url = { parser, at, length in
            ByteRelay.of(parser).target = String(decoding: UnsafeRawBufferPointer(start: at, count: length), as: UTF8.self)
            return 0
        }
        settings.pointee.on_header_field = { parser, at, length in
            ByteRelay.of(parser).fieldName = String(decoding: UnsafeRawBufferPointer(start: at, count: length), as: UTF8.self)
            return 0
        }
        settings.pointee.on_header_value = { parser, at, length in
            let relay = ByteRelay.of(parser)
            relay.fields.append((relay.fieldName, String(decoding: UnsafeRawBufferPointer(start: at, count: length), as: UTF8.self)))
            return 0
        }
        settings.pointee.on_headers_complete = { parser in
            ByteRelay.of(parser).makeHead(parser!)
            return 0
        }
        let parser = UnsafeMutablePointer<llhttp_t>.allocate(capacity: 1)
        c_nio_llhttp_init(parser, type, settings)
        (self.parser, self.settings) = (parser, settings)
        parser.pointee.data = Unmanaged.passUnretained(self).toOpaque()
    }

    deinit {
        self.parser?.deallocate()
        self.settings?.deallocate()
    }

    private static func of(_ parser: UnsafeMutablePointer<llhttp_t>?) -> ByteRelay {
        Unmanaged<ByteRelay>.fromOpaque(parser!.pointee.data).takeUnretainedValue()
    }

    private func makeHead(_ parser: UnsafeMutablePointer<llhttp_t>) {
        let headers = HTTPHeaders(self.fields)
        self.fields.removeAll(keepingCapacity: true)
        let version = HTTPVersion(major: Int(parser.pointee.http_major), minor: Int(parser.pointee.http_minor))
        if parser.pointee.type == UInt8(HTTP_REQUEST.rawValue) {
            let code = parser.pointee.method
            let method: HTTPMethod = code == UInt8(HTTP_GET.rawValue)
                ? .GET : HTTPMethod(rawValue: String(cString: c_nio_llhttp_method_name(llhttp_method_t(UInt32(code)))))
            self.headsMade &+= HTTPRequestHead(version: version, method: method, uri: self.target, headers: headers).headers.count
        } else {
            let status = HTTPResponseStatus(statusCode: Int(parser.pointee.status_code))
            self.headsMade &+= HTTPResponseHead(version: version, status: status, headers: headers).headers.count
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = self.unwrapInboundIn(data)
        if let parser = self.parser {
            let parsed = bytes.withUnsafeReadableBytes { c_nio_llhttp_execute_swift(parser, $0.baseAddress, $0.count) }
            guard parsed == HPE_OK else {
                context.close(promise: nil)
                return
            }
        }
        if let peer = self.peer {
            peer.write(IOData.byteBuffer(bytes), promise: nil)
            self.wrote = true
            return
        }
        self.waiting.append(bytes)
        guard let appPort = self.appPort, self.waiting.count == 1 else { return }
        let client = context.channel
        let parses = self.parser != nil
        ClientBootstrap(group: context.eventLoop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let relay = ByteRelay(appPort: nil, parsing: parses ? HTTP_RESPONSE : nil)
                    relay.peer = client
                    try channel.pipeline.syncOperations.addHandler(relay)
                }
            }
            .connect(host: "127.0.0.1", port: appPort)
            .assumeIsolated()
            .whenComplete { result in
                switch result {
                case .success(let app):
                    self.peer = app
                    for bytes in self.waiting { app.write(IOData.byteBuffer(bytes), promise: nil) }
                    self.waiting = []
                    app.flush()
                case .failure:
                    client.close(promise: nil)
                }
            }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if self.wrote {
            self.wrote = false
            self.peer?.flush()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.peer?.close(promise: nil)
    }
}

let server = try ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 4096)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            switch mode {
            case .bytes, .llhttp:
                let relay = ByteRelay(appPort: appPort, parsing: mode == .llhttp ? HTTP_REQUEST : nil)
                try channel.pipeline.syncOperations.addHandler(relay)
            case .http:
                try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
                try channel.pipeline.syncOperations.addHandler(ClientHandler(appPort: appPort))
            }
        }
    }
    .bind(host: "127.0.0.1", port: listenPort)
    .wait()
var received: Int32 = 0
sigwait(&terminate, &received)
exit(0)
