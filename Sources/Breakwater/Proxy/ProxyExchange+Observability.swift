import Foundation
import Logging
import NIOCore

extension ProxyExchange {
    /// A diagnostic line about this request: it always carries the request id and route, so
    /// one request can be followed through the proxy's and the app's logs.
    func log(_ level: Logger.Level, _ message: @autoclosure () -> Logger.Message, _ metadata: Logger.Metadata = [:]) {
        let logger = self.shared.logger
        guard logger.logLevel <= level else { return }
        var metadata = metadata
        metadata["request_id"] = "\(self.trace.requestID)"
        metadata["route"] = "\(self.route.name)"
        logger.log(level: level, message(), metadata: metadata)
    }

    /// The request is over: one access log line, and the request counters.
    func recordCompletion() {
        guard self.isRecorded else { return }
        let elapsed = self.now - self.startedAt
        self.loop.requestCounter(self.route.metrics, method: RouteMetrics.boundedMethod(self.request.method), code: self.answeredStatus, reason: self.answerReason)
            .increment()
        self.route.metrics.duration.recordNanoseconds(elapsed.nanoseconds)
        guard let accessLog = self.shared.accessLog else { return }
        let upstream = self.firstForwardedAt.flatMap { sent in
            self.responseHeadAt.map { Duration.nanoseconds(($0 - sent).nanoseconds) }
        }
        let record = AccessLogRecord(
            time: Date(),
            requestID: self.trace.requestID,
            traceID: self.trace.traceID,
            method: self.request.method.rawValue,
            path: String(Router.path(of: self.request.uri)),
            route: self.route.name,
            status: self.answeredStatus,
            reason: self.answerReason,
            duration: .nanoseconds(elapsed.nanoseconds),
            upstreamDuration: upstream,
            attempts: self.attempts,
            bytesIn: self.requestBodyBytes,
            bytesOut: self.bytesOut,
            client: self.clientAddress
        )
        accessLog.write(record.jsonLine())
    }
}
