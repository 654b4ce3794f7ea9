import NIOHTTP1
import W3CTraceContext

/// The identity of one request as the app and the logs see it: its request id (kept when the
/// client sent one, else a new 32-hex one) and its W3C trace context (kept when valid, replaced
/// when invalid, added when absent).
struct RequestTrace {
    let requestID: String
    /// The `traceparent` and `tracestate` values the app receives.
    private let traceparent: String?
    private let tracestate: String?

    /// The trace id (32 hex) when `trace.traceparent` is on: read out of the `traceparent` only
    /// when an access log line asks, since both forms put it at the same place.
    var traceID: String? {
        self.traceparent.map { String($0.utf8.dropFirst(3).prefix(32))! }
    }

    /// - Parameter presented: the client's fields, surveyed with `configuration.requestIDHeader`.
    init(presented: MessageFields, configuration: TraceConfig, generator: inout IdentifierGenerator) {
        self.requestID = presented.requestID.flatMap { Self.isAcceptableRequestID($0) ? $0 : nil } ?? Self.newRequestID(using: &generator)
        guard configuration.traceparent else {
            (self.traceparent, self.tracestate) = (nil, nil)
            return
        }
        if let value = presented.traceparent.flatMap(Self.inVersionZeroLayout), let valid = try? TraceContext(traceParentHeaderValue: value) {
            // The `tracestate` goes on as it came: the proxy adds no entry of its own, and a
            // list the library would not parse (an empty member, a tab) must not cost the
            // caller its trace (W3C Trace Context: a failure to parse `tracestate` must not
            // affect `traceparent`).
            self.traceparent = valid.traceParentHeaderValue
            self.tracestate = presented.tracestate
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
            self.tracestate = nil
        }
    }

    /// Whether the client's `traceparent` and `tracestate` give way to this trace's: when the
    /// proxy takes part in the trace. (Its request id always replaces the client's.)
    var replacesTraceContext: Bool { self.traceparent != nil }

    /// Writes the trace headers into a request head going to the app, in place of the client's
    /// request id and, when it `replacesTraceContext`, trace context.
    func write(to head: inout HeadWriter, configuration: TraceConfig) {
        head.field(configuration.requestIDHeader, self.requestID)
        if let traceparent = self.traceparent {
            head.field("traceparent", traceparent)
            if let tracestate = self.tracestate {
                head.field("tracestate", tracestate)
            }
        }
    }

    /// A `traceparent` as version 00, the only version the library (and the proxy) speaks; nil
    /// when it cannot be read as one. W3C Trace Context (§4.3) has a higher version read with
    /// version 00's layout, from its first 55 characters when what follows them is nothing or
    /// a dash, and passed on as version 00; `ff` is never valid. The library checks the rest.
    static func inVersionZeroLayout(_ value: String) -> String? {
        let bytes = value.utf8
        guard bytes.count >= 55 else { return nil }
        let version = bytes.prefix(2)
        if version.elementsEqual("00".utf8) {
            return value  // 55 characters exactly: the library checks
        }
        let isLowercaseHex = { (byte: UInt8) in (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte) }
        guard version.allSatisfy(isLowercaseHex), !version.elementsEqual("ff".utf8),
            bytes.count == 55 || bytes[bytes.index(bytes.startIndex, offsetBy: 55)] == UInt8(ascii: "-")
        else { return nil }
        return "00" + String(Substring(bytes.dropFirst(2).prefix(53)))
    }

    /// A client's id is kept when it is visible ASCII (quotes and backslashes included: the
    /// access log escapes them) and of a sane length, so it can neither break a header nor a
    /// log line. Not a space: the diagnostic log prints metadata as `key=value` pairs, and an
    /// id `x route=webhooks` would forge a field there.
    static func isAcceptableRequestID(_ id: String) -> Bool {
        (1...200).contains(id.utf8.count) && id.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }
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
    static func writeHex(_ word: UInt64, into buffer: UnsafeMutableBufferPointer<UInt8>, at: inout Int) {
        let memory = UnsafeMutableRawBufferPointer(buffer)
        memory.storeBytes(of: Self.hexDigits(UInt32(truncatingIfNeeded: word >> 32)).bigEndian, toByteOffset: at, as: UInt64.self)
        memory.storeBytes(of: Self.hexDigits(UInt32(truncatingIfNeeded: word)).bigEndian, toByteOffset: at + 8, as: UInt64.self)
        at += 16
    }

    /// The eight hex digits of `half`, one a byte, the first in the most significant: its
    /// nibbles spread one to a byte, then every byte turned into a digit by the same sum (`0`
    /// is 0x30, and `a` comes 39 after `9` + 1), eight digits at once with no branch. Ids are
    /// written on every request; a digit at a time cost more than the rest of the trace.
    private static func hexDigits(_ half: UInt32) -> UInt64 {
        var nibbles = UInt64(half)
        nibbles = (nibbles | nibbles << 16) & 0x0000_FFFF_0000_FFFF
        nibbles = (nibbles | nibbles << 8) & 0x00FF_00FF_00FF_00FF
        nibbles = (nibbles | nibbles << 4) & 0x0F0F_0F0F_0F0F_0F0F
        let isLetter = ((nibbles &+ 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101
        return nibbles &+ 0x3030_3030_3030_3030 &+ isLetter &* 39
    }
}
