@testable import Breakwater
import NIOCore
import NIOHTTP1
import Testing

/// What the proxy reads of a message's fields in its one pass (`MessageFields`, `FieldName`)
/// and the heads it writes from that (`HeaderRewriting`), without sockets: each case names the
/// exact fields, including the rare ones (a `Connection` that nominates, names that differ from
/// a known one by a byte) that the integration tests' clients never send.
@Suite struct HeaderRewritingTests {
    // MARK: Telling names apart

    @Test func knownNamesAreRecognisedInAnyCase() {
        let known: [(String, FieldName)] = [
            ("Host", .host), ("content-length", .contentLength), ("Transfer-Encoding", .transferEncoding),
            ("CONNECTION", .connection), ("Keep-Alive", .keepAlive), ("Proxy-Connection", .proxyConnection),
            ("TE", .te), ("Trailer", .trailer), ("Upgrade", .upgrade), ("Expect", .expect),
            ("X-Forwarded-For", .xForwardedFor), ("x-forwarded-PROTO", .xForwardedProto),
            ("traceparent", .traceparent), ("TraceState", .tracestate),
        ]
        for (name, field) in known {
            #expect(FieldName(name) == field, "\(name)")
        }
    }

    /// Names of a known one's length that differ in one byte are other fields: among them
    /// bytes that a fold of every byte with 0x20 would have taken for `-` or a letter.
    @Test func nearMissesAreOtherFields() {
        let nearMisses = [
            "Hosts", "Hist", "H0st", "te-", "tf", "Expekt", "Trailed", "Upgrades", "Connectiom", "keep_alive",
            "tracestatf", "traceparenT2", "content\u{0D}length", "x-forwarded\u{0D}for", "Content-Lengt", "x-forwarded-fox",
            "proxy-connectioN2", "transfer-encodinf", "x-forwarded-prota", "", "X",
        ]
        for name in nearMisses {
            #expect(FieldName(name) == .other, "\(name.debugDescription)")
        }
    }

    // MARK: The survey

    @Test func aRequestsSurveyReadsFramingHostsAndTheTrace() {
        #expect(MessageFields(["traceparent": " tp-1\t"]).traceparent == "tp-1")
        let fields = MessageFields(
            [
                "Host": "a", "X-Request-ID": "first", "x-request-id": "second", "traceparent": "tp-1", "TRACEPARENT": "tp-2",
                "tracestate": "ts", "Content-Length": "12", "content-length": "13",
            ],
            requestIDHeader: "X-Request-ID"
        )
        #expect(fields.hostCount == 1)
        #expect(fields.hasValidHost(version: .http1_1))
        #expect(fields.declaredFraming == .contentLength(12))
        #expect(fields.requestID == "first")
        #expect(fields.traceparent == "")  // two: invalid, a new trace (W3C Trace Context)
        #expect(fields.tracestate == "ts")
        #expect(!fields.expectsContinue && !fields.requestsUpgrade && fields.nominated.isEmpty)
    }

    @Test func onlyALoneChunkedIsATransferCodingThatCanBeForwarded() {
        #expect(!MessageFields(["Transfer-Encoding": "chunked"]).hasOtherTransferCoding)
        #expect(!MessageFields(["transfer-encoding": "Chunked"]).hasOtherTransferCoding)
        #expect(!MessageFields(["Content-Length": "3"]).hasOtherTransferCoding)
        #expect(MessageFields(["Transfer-Encoding": "gzip, chunked"]).hasOtherTransferCoding)
        #expect(MessageFields(["Transfer-Encoding": "gzip"]).hasOtherTransferCoding)
        #expect(MessageFields(HeaderFields(HTTPHeaders([("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")]))).hasOtherTransferCoding)
    }

    /// Read as NIO's `HTTPHeaders.isKeepAlive` reads it, for every `Connection` a test can
    /// think of; heads made by `HTTPParser` carry no verdict of llhttp's to ask instead.
    @Test func keepAliveIsReadAsNIOReadsIt() {
        let connections: [[String]] = [
            [], ["close"], ["keep-alive"], ["Keep-Alive"], ["CLOSE"], ["close, keep-alive"], ["keep-alive, close"],
            ["keep-alive", "keep-alive"], ["keep-alive, keep-alive"], ["upgrade"], ["Upgrade, Keep-Alive"],
            ["x-hop, close"], ["close", "x-hop"], [" keep-alive "], ["keep-alive;q=1"],
        ]
        for connection in connections {
            let headers = HTTPHeaders(connection.map { ("Connection", $0) })
            for version in [HTTPVersion.http1_0, .http1_1] {
                let nio = HTTPRequestHead(version: version, method: .GET, uri: "/", headers: headers).isKeepAlive
                #expect(MessageFields(HeaderFields(headers)).keepsAlive(version: version) == nio, "\(connection) \(version)")
            }
        }
    }

    @Test func hostMustBeThereOnceInHTTP11() {
        #expect(!MessageFields(["Host": "a", "host": "b"]).hasValidHost(version: .http1_1))
        #expect(!MessageFields([:]).hasValidHost(version: .http1_1))
        #expect(MessageFields([:]).hasValidHost(version: .http1_0))
        #expect(!MessageFields(HeaderFields(HTTPHeaders([("Host", "a"), ("Host", "a")]))).hasValidHost(version: .http1_0))
    }

    @Test func transferEncodingDecidesFramingOverLength() {
        #expect(MessageFields(["Transfer-Encoding": "chunked", "Content-Length": "5"]).declaredFraming == .chunked)
        #expect(MessageFields(["X-Other": "1"]).declaredFraming == nil)
        #expect(MessageFraming(request: MessageFields([:])) == .noBody)
        let head = ResponseHead(version: .http1_1, status: .ok, headers: [:])
        #expect(MessageFraming(response: head, fields: MessageFields([:]), requestMethod: .GET) == .untilClose)
        #expect(MessageFraming(response: head, fields: MessageFields(["content-length": "7"]), requestMethod: .HEAD) == .noBody)
    }

    @Test func connectionNominatesWhatItListsBesidesCloseAndKeepAlive() {
        let fields = MessageFields(["Connection": " Keep-Alive ,X-Hop,, close,\tUpgrade ", "Upgrade": "websocket"])
        #expect(fields.nominated == ["X-Hop", "Upgrade"])
        #expect(fields.requestsUpgrade)
        #expect(fields.nominated.nominates(named: "x-hop", keepingUpgrade: false))
        #expect(fields.nominated.nominates(named: "upgrade", keepingUpgrade: false))
        #expect(!fields.nominated.nominates(named: "upgrade", keepingUpgrade: true))
        #expect(!fields.nominated.nominates(named: "x-other", keepingUpgrade: false))
        // `Upgrade` named but absent, or present but not named: no switch asked for.
        #expect(!MessageFields(["Connection": "upgrade"]).requestsUpgrade)
        #expect(!MessageFields(["Connection": "keep-alive", "Upgrade": "websocket"]).requestsUpgrade)
        #expect(MessageFields(["Connection": "keep-alive", "connection": "CLOSE"]).nominated.isEmpty)
    }

    @Test func expectContinueIsFoundAmongOtherExpectations() {
        #expect(MessageFields(["Expect": "100-continue"]).expectsContinue)
        #expect(MessageFields(["Expect": "foo=1, 100-Continue"]).expectsContinue)
        #expect(MessageFields(["expect": "x", "Expect": " 100-continue"]).expectsContinue)
        #expect(!MessageFields(["Expect": "100-continued"]).expectsContinue)
    }

    // MARK: The heads written from it

    @Test func aResponseLosesWhatItsConnectionNominatedAndTheAppsRequestID() {
        let head = ResponseHead(
            version: .http1_1,
            status: .ok,
            headers: [
                "X-Secret": "1", "Content-Type": "text/plain", "Connection": "x-secret, keep-alive", "x-request-id": "from-app",
                "Keep-Alive": "timeout=5", "Content-Length": "2",
            ]
        )
        let written = Self.clientResponse(head, framing: .contentLength(2))
        #expect(written == "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Request-ID: id-1\r\ncontent-length: 2\r\n\r\n")
    }

    @Test func aHeadResponseKeepsTheLengthItAnnounces() {
        let head = ResponseHead(version: .http1_1, status: .ok, headers: ["Content-Length": "5000", "content-length": "5000"])
        #expect(Self.clientResponse(head, framing: .noBody) == "HTTP/1.1 200 OK\r\nX-Request-ID: id-1\r\ncontent-length: 5000\r\n\r\n")
        let noContent = ResponseHead(version: .http1_1, status: .noContent, headers: ["Content-Length": "0"])
        #expect(Self.clientResponse(noContent, framing: .noBody) == "HTTP/1.1 204 No Content\r\nX-Request-ID: id-1\r\n\r\n")
    }

    @Test func aRequestLosesItsHopsAndTakesTheProxysTrace() {
        let head = RequestHead(
            version: .http1_1,
            method: .POST,
            uri: "/x",
            headers: [
                "Host": "app", "Connection": "X-Hop", "X-Hop": "1", "Expect": "100-continue", "X-Request-ID": "client",
                "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "a=b",
                "X-Forwarded-Proto": "https", "Content-Length": "3", "X-Kept": "yes",
            ]
        )
        let fields = MessageFields(head.headers, requestIDHeader: "X-Request-ID")
        var generator = IdentifierGenerator(seed: 7)
        let trace = RequestTrace(presented: fields, configuration: TraceConfig(), generator: &generator)
        let written = HeaderRewriting.upstreamRequest(
            head,
            app: .tcp(HostPort(host: "127.0.0.1", port: 8000)),
            nominated: fields.nominated,
            framing: MessageFraming(request: fields),
            clientAddress: "192.0.2.1",
            isUpgrade: fields.requestsUpgrade,
            trace: trace,
            traceConfiguration: TraceConfig(),
            allocator: ByteBufferAllocator()
        )
        #expect(
            String(buffer: written.bytes)
                == "POST /x HTTP/1.1\r\nHost: app\r\nX-Forwarded-Proto: https\r\nX-Kept: yes\r\nx-forwarded-for: 192.0.2.1\r\n"
                + "X-Request-ID: client\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
                + "tracestate: a=b\r\ncontent-length: 3\r\n\r\n"
        )
    }

    private static func clientResponse(_ head: ResponseHead, framing: MessageFraming) -> String {
        let written = HeaderRewriting.clientResponse(
            head,
            fields: MessageFields(head.headers),
            framing: framing,
            clientVersion: .http1_1,
            keepAlive: true,
            requestID: ("X-Request-ID", "id-1"),
            allocator: ByteBufferAllocator()
        )
        return String(buffer: written.bytes)
    }
}


extension [String] {
    /// `nominates` asked of a name given as a string.
    fileprivate func nominates(named name: String, keepingUpgrade: Bool) -> Bool {
        var name = name
        return name.withUTF8 { self.nominates(FieldBytes(UnsafeRawBufferPointer($0)), keepingUpgrade: keepingUpgrade) }
    }
}
