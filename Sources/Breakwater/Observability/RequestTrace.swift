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
        if let value = headers.first(name: "traceparent"),
            let valid = try? TraceContext(traceParentHeaderValue: value, traceStateHeaderValue: headers.first(name: "tracestate"))
        {
            self.traceID = valid.traceID.description
            self.traceparent = valid.traceParentHeaderValue
            self.tracestate = headers.first(name: "tracestate")
        } else {
            // A new trace: `00-<trace id>-<span id>-00`, written in one pass (the library's
            // formatting allocates per field). A trace id of all zeros is invalid; 2^-128.
            var high: UInt64 = 0
            var low: UInt64 = 0
            while high == 0 && low == 0 {
                (high, low) = (generator.next(), generator.next())
            }
            let span = generator.next() | 1  // never all zeros either
            let traceparent = String(unsafeUninitializedCapacity: 55) { buffer in
                var at = 0
                func put(_ byte: UInt8) {
                    buffer[at] = byte
                    at += 1
                }
                put(UInt8(ascii: "0")); put(UInt8(ascii: "0")); put(UInt8(ascii: "-"))
                Self.writeHex(high, into: buffer, at: &at)
                Self.writeHex(low, into: buffer, at: &at)
                put(UInt8(ascii: "-"))
                Self.writeHex(span, into: buffer, at: &at)
                put(UInt8(ascii: "-")); put(UInt8(ascii: "0")); put(UInt8(ascii: "0"))
                return at
            }
            self.traceparent = traceparent
            self.traceID = String(traceparent.utf8.dropFirst(3).prefix(32))!
            self.tracestate = nil
        }
    }

    /// Whether the client's header `name` gives way to this trace's: the request id always, and
    /// `traceparent` and `tracestate` when the proxy takes part in the trace.
    func replaces(_ name: String, configuration: TraceConfig) -> Bool {
        if name.equalsASCIICaseInsensitive(configuration.requestIDHeader) { return true }
        return self.traceparent != nil
            && (name.equalsASCIICaseInsensitive("traceparent") || name.equalsASCIICaseInsensitive("tracestate"))
    }

    /// Adds the trace headers to a request head going to the app, in place of those it
    /// `replaces`.
    func add(to headers: inout HeaderFields, configuration: TraceConfig) {
        headers.add(name: configuration.requestIDHeader, value: self.requestID)
        if let traceparent = self.traceparent {
            headers.add(name: "traceparent", value: traceparent)
            if let tracestate = self.tracestate {
                headers.add(name: "tracestate", value: tracestate)
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
        let (high, low) = (generator.next(), generator.next())
        return String(unsafeUninitializedCapacity: 32) { buffer in
            var at = 0
            Self.writeHex(high, into: buffer, at: &at)
            Self.writeHex(low, into: buffer, at: &at)
            return at
        }
    }

    /// 16 lowercase hex digits of `word`, most significant first.
    private static func writeHex(_ word: UInt64, into buffer: UnsafeMutableBufferPointer<UInt8>, at: inout Int) {
        for shift in stride(from: 60, through: 0, by: -4) {
            let nibble = UInt8((word >> UInt64(shift)) & 0xF)
            buffer[at] = nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") - 10 + nibble
            at += 1
        }
    }
}
