import NIOHTTP1
import W3CTraceContext

/// The identity of one request as the app and the logs see it: its request id (kept when the
/// client sent one, else a new 32-hex one) and its W3C trace context (kept when valid, replaced
/// when invalid, added when absent).
struct RequestTrace {
    let requestID: String
    /// The trace id (32 hex) when `trace.traceparent` is on.
    let traceID: String?
    /// The `traceparent` and `tracestate` values the app receives.
    private let traceparent: String?
    private let tracestate: String?

    init(request headers: HTTPHeaders, configuration: TraceConfig, generator: inout IdentifierGenerator) {
        let presented = headers.first(name: configuration.requestIDHeader)
        self.requestID = presented.flatMap { Self.isAcceptableRequestID($0) ? $0 : nil } ?? Self.newRequestID(using: &generator)
        guard configuration.traceparent else {
            (self.traceID, self.traceparent, self.tracestate) = (nil, nil, nil)
            return
        }
        let context: TraceContext
        if let value = headers.first(name: "traceparent"),
            let valid = try? TraceContext(traceParentHeaderValue: value, traceStateHeaderValue: headers.first(name: "tracestate"))
        {
            context = valid
            self.tracestate = headers.first(name: "tracestate")
        } else {
            context = TraceContext(traceID: .random(using: &generator), spanID: .random(using: &generator), flags: [], state: TraceState())
            self.tracestate = nil
        }
        self.traceID = context.traceID.description
        self.traceparent = context.traceParentHeaderValue
    }

    /// Sets the trace headers on a request head going to the app.
    func apply(to headers: inout HTTPHeaders, configuration: TraceConfig) {
        headers.replaceOrAdd(name: configuration.requestIDHeader, value: self.requestID)
        if let traceparent = self.traceparent {
            headers.replaceOrAdd(name: "traceparent", value: traceparent)
            if let tracestate = self.tracestate {
                headers.replaceOrAdd(name: "tracestate", value: tracestate)
            } else {
                headers.remove(name: "tracestate")
            }
        }
    }

    /// A client's id is kept when it is printable and of a sane length, so it can neither
    /// break a header nor a log line.
    static func isAcceptableRequestID(_ id: String) -> Bool {
        (1...200).contains(id.utf8.count) && id.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }
    }

    /// 32 lowercase hex digits from 128 random bits.
    static func newRequestID(using generator: inout IdentifierGenerator) -> String {
        let high = generator.next() as UInt64
        let low = generator.next() as UInt64
        let digits = Array("0123456789abcdef".utf8)
        return String(unsafeUninitializedCapacity: 32) { buffer in
            for index in 0..<16 {
                buffer[index] = digits[Int((high >> UInt64(60 - index * 4)) & 0xF)]
                buffer[16 + index] = digits[Int((low >> UInt64(60 - index * 4)) & 0xF)]
            }
            return 32
        }
    }
}
