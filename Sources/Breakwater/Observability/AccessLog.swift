import Atomics
import Foundation
import NIOConcurrencyHelpers

/// One access log line: what happened to one request, as JSON.
struct AccessLogRecord {
    var time: Date
    var requestID: String
    var traceID: String?
    /// Nil for a request refused before its head could be read (`recordUnreadRequest`).
    var method: String?
    var path: String?
    var route: String
    var status: Int
    /// `ok` when the app answered; else the proxy's reason, `client_closed` or `cut`.
    var reason: String
    var duration: Duration
    var upstreamDuration: Duration?
    var attempts: Int
    var bytesIn: Int
    var bytesOut: Int
    var client: String?

    func jsonLine() -> String {
        var fields: [String] = []
        fields.reserveCapacity(14)
        fields.append(#""time":"\#(Self.timestamp(self.time))""#)
        fields.append(#""request_id":\#(Self.quoted(self.requestID))"#)
        fields.append(#""trace_id":\#(self.traceID.map(Self.quoted) ?? "null")"#)
        fields.append(#""method":\#(self.method.map(Self.quoted) ?? "null")"#)
        fields.append(#""path":\#(self.path.map(Self.quoted) ?? "null")"#)
        fields.append(#""route":\#(Self.quoted(self.route))"#)
        fields.append(#""status":\#(self.status)"#)
        fields.append(#""reason":\#(Self.quoted(self.reason))"#)
        fields.append(#""duration_ms":\#(Self.milliseconds(self.duration))"#)
        fields.append(#""upstream_ms":\#(self.upstreamDuration.map(Self.milliseconds) ?? "null")"#)
        fields.append(#""attempts":\#(self.attempts)"#)
        fields.append(#""bytes_in":\#(self.bytesIn)"#)
        fields.append(#""bytes_out":\#(self.bytesOut)"#)
        fields.append(#""client":\#(self.client.map(Self.quoted) ?? "null")"#)
        return "{" + fields.joined(separator: ",") + "}"
    }

    private static func milliseconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let microseconds = seconds * 1_000_000 + attoseconds / 1_000_000_000_000
        return String(format: "%.3f", Double(microseconds) / 1000)
    }

    private static func timestamp(_ date: Date) -> String {
        date.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
    }

    /// A JSON string literal; paths and ids come from clients, so everything is escaped.
    static func quoted(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.value < 0x20: result += String(format: "\\u%04x", scalar.value)
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}

/// Writes access log lines to stdout from a thread of its own, so a slow reader of stdout
/// never blocks an event loop. The queue is bounded: when it is full, lines are dropped and
/// counted rather than memory grown. Lines stdout refuses (a closed pipe, a full disk) are
/// dropped and counted too: the requests matter more than their log. The count is
/// `breakwater_access_log_dropped_total`, so a log shipper that falls behind shows.
final class AccessLogWriter: Sendable {
    /// The one writer of the process: stdout is one stream.
    static let standardOutput = AccessLogWriter()

    /// Lines dropped so far in this process, whether or not a writer was ever made.
    static var linesDropped: Int { Self.dropped.load(ordering: .relaxed) }
    private static let dropped = ManagedAtomic(0)

    private struct Queue {
        var lines: [String] = []
        /// A batch taken from `lines` is being written.
        var writing = false
    }

    private let queue = NIOLockedValueBox(Queue())
    private let wakeUp = ConditionLock(value: false)
    private let capacity: Int

    private init(capacity: Int = 10_000) {
        self.capacity = capacity
        let thread = Thread { [self] in self.drain() }
        thread.name = "breakwater-access-log"
        thread.start()
    }

    func write(_ line: String) {
        let accepted = self.queue.withLockedValue { queue in
            guard queue.lines.count < self.capacity else {
                Self.dropped.wrappingIncrement(ordering: .relaxed)
                return false
            }
            queue.lines.append(line)
            return true
        }
        if accepted {
            self.wakeUp.lock()
            self.wakeUp.unlock(withValue: true)
        }
    }

    /// Waits until every line written so far is out, or `limit` passed: at exit, the lines of
    /// the last requests, which a drain waited for, must not be lost with the process.
    func flush(within limit: Duration) async {
        let deadline = ContinuousClock.now + limit
        while ContinuousClock.now < deadline, self.queue.withLockedValue({ !$0.lines.isEmpty || $0.writing }) {
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    private func drain() {
        while true {
            self.wakeUp.lock(whenValue: true)
            self.wakeUp.unlock(withValue: false)
            let lines = self.queue.withLockedValue { queue in
                defer { queue.lines.removeAll(keepingCapacity: true) }
                queue.writing = !queue.lines.isEmpty
                return queue.lines
            }
            guard !lines.isEmpty else { continue }
            let text = lines.joined(separator: "\n") + "\n"
            do {
                // The throwing write: Foundation's older `write(_:)` traps on an error, and a log
                // reader that went away (EPIPE) or a full disk must not take the proxy down.
                try FileHandle.standardOutput.write(contentsOf: Data(text.utf8))
            } catch {
                Self.dropped.wrappingIncrement(by: lines.count, ordering: .relaxed)
            }
            self.queue.withLockedValue { $0.writing = false }
        }
    }
}
