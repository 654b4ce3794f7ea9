@testable import Breakwater
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import W3CTraceContext

/// X-Request-ID and W3C traceparent, as the app and the client see them.
@Suite struct TraceTests {
    private static let validParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    private static func isHex(_ text: String, count: Int) -> Bool {
        text.count == count && text.allSatisfy { "0123456789abcdef".contains($0) }
    }

    @Test func aRequestWithoutAnIDGetsOneAndItComesBack() async throws {
        try await ProxyHarness.with { proxy in
            let response = try await proxy.request(get("/status/200"))
            let id = try #require(response.header("x-request-id"))
            #expect(Self.isHex(id, count: 32))
            #expect(proxy.backend.requestsReceived.last?.header("x-request-id") == id)
            let traceparent = try #require(proxy.backend.requestsReceived.last?.header("traceparent"))
            #expect(traceparent.split(separator: "-").count == 4)
        }
    }

    /// Any id of visible ASCII of at most 200 bytes is kept; another is replaced by a new one.
    @Test func aClientsIDIsKept() async throws {
        try await ProxyHarness.with { proxy in
            for id in ["client-chosen-42", #""quoted"\back"#, String(repeating: "x", count: 200)] {
                let response = try await proxy.request(get("/status/200", headers: ["X-Request-ID: \(id)"]))
                #expect(response.header("x-request-id") == id)
                #expect(proxy.backend.requestsReceived.last?.header("x-request-id") == id)
            }
            for id in [String(repeating: "x", count: 201), "tab\there", "caf\u{E9}", "x route=webhooks"] {
                let response = try await proxy.request(get("/status/200", headers: ["X-Request-ID: \(id)"]))
                let replaced = response.header("x-request-id")
                #expect(replaced != id && replaced?.utf8.count == 32, "\(id.debugDescription) became \(replaced ?? "nothing")")
            }
        }
    }

    @Test func localAnswersCarryTheIDToo() async throws {
        try await ProxyHarness.with(upstream: "127.0.0.1:1") { proxy in
            let response = try await proxy.request(get("/", headers: ["X-Request-ID: abc"]))
            #expect(response.status == 502)
            #expect(response.header("x-request-id") == "abc")
        }
    }

    /// Requests refused before their head could be read (400, 431, 408) get an id too, and
    /// a request whose body turned malformed keeps the one the app saw.
    @Test func answersToUnreadableRequestsCarryAnIDToo() async throws {
        try await ProxyHarness.with(configuration: "[server]\nheader_read_timeout = \"1s\"\nmax_header_bytes = \"8KB\"\n") { proxy in
            let unreadable = [
                ("GET / HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n", 400),
                ("GET / HTTP/1.1\r\nHost: a\r\nX-Big: \(String(repeating: "a", count: 10_000))\r\n\r\n", 431),
                ("GET / HTTP/1.1\r\nHost: a\r\n", 408),
            ]
            var ids: Set<String> = []
            for (request, status) in unreadable {
                let response = try await proxy.request(request)
                #expect(response.status == status)
                let id = try #require(response.header("x-request-id"), "\(status) without an id")
                #expect(id.count == 32 && id.allSatisfy(\.isHexDigit))
                ids.insert(id)
            }
            #expect(ids.count == 3)

            let client = try await proxy.connect()
            try await client.send("POST /echo HTTP/1.1\r\nHost: a\r\nX-Request-ID: mine-1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n")
            try await client.send("zz\r\n")
            let response = try await client.readResponse()
            #expect(response.status == 400)
            #expect(response.header("x-request-id") == "mine-1")
        }
    }

    @Test func aValidTraceparentIsKeptWithItsTracestate() async throws {
        try await ProxyHarness.with { proxy in
            _ = try await proxy.request(get("/status/200", headers: ["traceparent: \(Self.validParent)", "tracestate: congo=t61rcWkgMzE"]))
            let received = try #require(proxy.backend.requestsReceived.last)
            #expect(received.header("traceparent") == Self.validParent)
            #expect(received.header("tracestate") == "congo=t61rcWkgMzE")
        }
    }

    /// A `tracestate` the library would not parse (an empty list member, which W3C allows)
    /// must not cost the caller its trace; several lines go on as one list.
    @Test func aValidTraceparentSurvivesAnOddTracestateAndSeveralLinesAreJoined() async throws {
        try await ProxyHarness.with { proxy in
            _ = try await proxy.request(get("/status/200", headers: ["traceparent: \(Self.validParent)", "tracestate: congo=t61rcWkgMzE,,rojo=00f067aa0ba902b7"]))
            let odd = try #require(proxy.backend.requestsReceived.last)
            #expect(odd.header("traceparent") == Self.validParent)
            #expect(odd.header("tracestate") == "congo=t61rcWkgMzE,,rojo=00f067aa0ba902b7")
            _ = try await proxy.request(get("/status/200", headers: ["traceparent: \(Self.validParent)", "tracestate: a=1", "tracestate: b=2"]))
            let split = try #require(proxy.backend.requestsReceived.last)
            #expect(split.headers.filter { $0.name.lowercased() == "tracestate" }.map(\.value) == ["a=1,b=2"])
        }
    }

    @Test func anInvalidTraceparentIsReplaced() async throws {
        try await ProxyHarness.with { proxy in
            _ = try await proxy.request(get("/status/200", headers: ["traceparent: 00-not-a-trace-01", "tracestate: stale=1"]))
            let received = try #require(proxy.backend.requestsReceived.last)
            let parts = try #require(received.header("traceparent")).split(separator: "-").map(String.init)
            #expect(parts.count == 4)
            #expect(parts[0] == "00")
            #expect(Self.isHex(parts[1], count: 32))
            #expect(Self.isHex(parts[2], count: 16))
            #expect(received.header("tracestate") == nil)
        }
    }

    /// The cases of W3C Trace Context's test suite a proxy meets: a later version is read
    /// with version 00's layout and passed on as 00, when what follows its first 55
    /// characters is nothing or a dash; `ff`, an uppercase version, 00 with anything after
    /// it and two `traceparent`s start a new trace; blanks around the value do not.
    @Test func traceparentsAreReadAsW3CTraceContextSays() throws {
        let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
        func forwarded(_ fields: [(String, String)]) throws -> String {
            var generator = IdentifierGenerator(seed: 7)
            let presented = MessageFields(HeaderFields(HTTPHeaders(fields)))
            let written = RequestTrace(presented: presented, configuration: TraceConfig(), generator: &generator)
            let head = HeadWriter.written(allocator: ByteBufferAllocator()) { written.write(to: &$0, configuration: TraceConfig()) }
            let line = try #require(String(buffer: head.bytes).split(separator: "\r\n").first { $0.hasPrefix("traceparent: ") })
            return String(line.dropFirst("traceparent: ".count))
        }
        for value in ["cc-\(trace)-\(parent)-01", "cc-\(trace)-\(parent)-01-what-the-future-will-be-like", "00-\(trace)-\(parent)-01 ", " 00-\(trace)-\(parent)-01\t"] {
            #expect(try forwarded([("traceparent", value)]) == "00-\(trace)-\(parent)-01", "\(value)")
        }
        let replaced: [[(String, String)]] = [
            [("traceparent", "cc-\(trace)-\(parent)-01.what-the-future-will-be-like")],
            [("traceparent", "ff-\(trace)-\(parent)-01")],
            [("traceparent", "0C-\(trace)-\(parent)-01")],
            [("traceparent", "00-\(trace)-\(parent)-01-what-the-future-will-be-like")],
            [("traceparent", "00-\(trace)-\(parent)-01"), ("traceparent", "00-12345678901234567890123456789012-\(parent)-01")],
        ]
        for fields in replaced {
            let value = try forwarded(fields)
            #expect(!value.contains(trace) && !value.contains("12345678901234567890123456789012"), "\(fields)")
        }
    }

    /// New ids are written by hand (one pass, no library formatting): they must still be what
    /// the W3C parser accepts, all different, and the trace id the one in the traceparent.
    @Test func newTraceparentsAreValidAndDistinct() throws {
        var generator = IdentifierGenerator(seed: 42)
        var seen = Set<String>()
        for _ in 0..<1000 {
            let trace = RequestTrace(presented: MessageFields([:]), configuration: TraceConfig(), generator: &generator)
            let written = HeadWriter.written(allocator: ByteBufferAllocator()) { trace.write(to: &$0, configuration: TraceConfig()) }
            let line = try #require(String(buffer: written.bytes).split(separator: "\r\n").first { $0.hasPrefix("traceparent: ") })
            let traceparent = String(line.dropFirst("traceparent: ".count))
            let parsed = try TraceContext(traceParentHeaderValue: traceparent, traceStateHeaderValue: nil)
            #expect(parsed.traceID.description == trace.traceID)
            #expect(parsed.traceParentHeaderValue == traceparent)
            #expect(trace.requestID.utf8.count == 32 && Self.isHex(trace.requestID, count: 32))
            #expect(seen.insert(trace.requestID).inserted && seen.insert(traceparent).inserted)
        }
    }

    /// Ids are written eight digits at a time by arithmetic: every nibble value, in every place.
    @Test func idsAreTheirWordsInHex() {
        var generator = IdentifierGenerator(seed: 7)
        let words: [UInt64] = [0, .max, 0x0123_4567_89AB_CDEF, 0xFEDC_BA98_7654_3210, 0x9A9A_0F0F_F0F0_A9A9] + (0..<1000).map { _ in generator.next() }
        for word in words {
            let written = String(unsafeUninitializedCapacity: 16) { buffer in
                var at = 0
                RequestTrace.writeHex(word, into: buffer, at: &at)
                return at
            }
            let expected = String(repeating: "0", count: 16 - String(word, radix: 16).count) + String(word, radix: 16)
            #expect(written == expected)
        }
    }

    @Test func aCustomHeaderNameIsUsed() async throws {
        try await ProxyHarness.with(configuration: "[trace]\nrequest_id_header = \"X-Correlation-ID\"\ntraceparent = false\n") { proxy in
            let response = try await proxy.request(get("/status/200"))
            #expect(response.header("x-correlation-id") != nil)
            #expect(response.header("x-request-id") == nil)
            #expect(proxy.backend.requestsReceived.last?.header("traceparent") == nil)
        }
    }

    @Test func theAccessLogLineIsJSONWithTheRequestsIdentity() throws {
        let record = AccessLogRecord(
            time: Date(timeIntervalSince1970: 0),
            requestID: "abc",
            traceID: "4bf92f3577b34da6a3ce929d0e0e4736",
            method: "GET",
            path: "/a\"b",
            route: "api",
            status: 200,
            reason: "ok",
            duration: .milliseconds(12),
            upstreamDuration: .microseconds(11_500),
            attempts: 1,
            bytesIn: 0,
            bytesOut: 5,
            client: "127.0.0.1"
        )
        let object = try #require(try JSONSerialization.jsonObject(with: Data(record.jsonLine().utf8)) as? [String: Any])
        #expect(object["request_id"] as? String == "abc")
        #expect(object["trace_id"] as? String == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(object["path"] as? String == "/a\"b")
        #expect(object["duration_ms"] as? Double == 12)
        #expect(object["upstream_ms"] as? Double == 11.5)
        #expect(object["status"] as? Int == 200)
        #expect((object["time"] as? String)?.hasPrefix("1970-01-01T00:00:00.000") == true)
    }
}
