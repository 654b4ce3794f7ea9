import Foundation

extension ProxyShared {
    /// A request refused before it could be read — a malformed head (400), one too large
    /// (431), one too slow to arrive (408) — still gets what every answer gets: a count in
    /// `breakwater_requests_total` and an access log line. It has no method, path or route of
    /// its own, so it is counted on the route `default` with the method `OTHER`, and logged
    /// with `null` for method and path. Without this a scan or an attack would be invisible
    /// in both (nginx and HAProxy log such requests too: `400 "-"`, `<BADREQ>`).
    ///
    /// - Parameter duration: from the head's first byte to the refusal.
    /// - Returns: the request id header for the answer, with the id the log line has: the
    ///   client can quote it, as it can any other answer's.
    func recordUnreadRequest(_ reason: ProxyReason, client: String?, duration: Duration, loop: EventLoopContext) -> (name: String, value: String) {
        let requestID = RequestTrace.newRequestID(using: &loop.identifiers)
        let route = self.routes[self.routes.count - 1]
        let status = Int(reason.status.code)
        loop.requestCounter(route.metrics, method: "OTHER", code: status, reason: reason.rawValue).increment()
        route.metrics.duration.recordNanoseconds(duration.nanoseconds)
        guard let accessLog = self.accessLog else { return (self.trace.requestIDHeader, requestID) }
        let record = AccessLogRecord(
            time: Date(),
            requestID: requestID,
            traceID: nil,
            method: nil,
            path: nil,
            route: route.name,
            status: status,
            reason: reason.rawValue,
            duration: duration,
            upstreamDuration: nil,
            attempts: 0,
            bytesIn: 0,
            bytesOut: reason.body.utf8.count,  // the answer is always the generic one
            client: client
        )
        accessLog.write(record.jsonLine())
        return (self.trace.requestIDHeader, requestID)
    }
}
