import Foundation
import NIOCore
import NIOHTTP1

/// What the admin listener answers, path by path (SPEC's admin table).
struct AdminEndpoints: Sendable {
    struct Answer: Sendable {
        var status: HTTPResponseStatus
        var contentType = "application/json"
        var body: String
        /// The methods a 405's path takes (RFC 9110 §15.5.6 wants them named).
        var allow: String? = nil
    }

    let lifecycle: Lifecycle
    let routes: @Sendable () -> [Route]
    /// The name of the environment variable holding the token for POSTs.
    let tokenEnv: String

    func answer(_ request: HTTPRequestHead) -> Answer {
        let path = request.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? request.uri
        switch (request.method, path) {
        case (.GET, "/health/live"), (.HEAD, "/health/live"):
            return self.json(.ok, ["status": "live"])
        case (.GET, "/health/ready"), (.HEAD, "/health/ready"):
            return self.readiness()
        case (.GET, "/health/circuit-breakers"):
            return self.circuitBreakers()
        case (.GET, "/metrics"):
            let now = PolicyInstant.now
            for route in self.routes() { route.advanceBreaker(now: now) }
            return Answer(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: self.lifecycle.metrics.exposition())
        case (.POST, "/admin/drain"):
            return self.authorized(request) {
                self.lifecycle.requestDrain()
                return self.json(.accepted, ["status": "draining"])
            }
        case (.POST, "/admin/restart-app"):
            return self.authorized(request) {
                switch self.lifecycle.requestRollingRestart() {
                case .started:
                    return self.json(.accepted, ["status": "restarting"])
                case .refused:
                    return self.json(.conflict, ["error": "a rolling restart is already under way, or the app is stopping"])
                case .noSupervisedApp:
                    return self.json(.conflict, ["error": "no supervised app: start Breakwater with [app] or -- CMD"])
                }
            }
        case (.POST, _) where path.hasPrefix("/admin/circuit-breakers/") && path.hasSuffix("/reset"):
            let name = path.dropFirst("/admin/circuit-breakers/".count).dropLast("/reset".count)
            return self.authorized(request) {
                guard let route = self.routes().first(where: { $0.name == name }) else {
                    return self.json(.notFound, ["error": "no route named \(name)"])
                }
                route.resetBreaker()
                return self.json(.ok, ["route": route.name, "state": "closed"])
            }
        case (_, "/health/live"), (_, "/health/ready"):
            return self.methodNotAllowed(allow: "GET, HEAD")
        case (_, "/health/circuit-breakers"), (_, "/metrics"):
            return self.methodNotAllowed(allow: "GET")
        case (_, "/admin/drain"), (_, "/admin/restart-app"):
            return self.methodNotAllowed(allow: "POST")
        case (_, _) where path.hasPrefix("/admin/circuit-breakers/") && path.hasSuffix("/reset"):
            return self.methodNotAllowed(allow: "POST")
        default:
            return self.json(.notFound, ["error": "not found"])
        }
    }

    private func readiness() -> Answer {
        if self.lifecycle.currentPhase != .serving {
            return self.json(.serviceUnavailable, ["ready": false, "reason": "draining"])
        }
        if !self.lifecycle.isAppReady {
            return self.json(.serviceUnavailable, ["ready": false, "reason": "app not ready"])
        }
        return self.json(.ok, ["ready": true])
    }

    private func circuitBreakers() -> Answer {
        let now = PolicyInstant.now
        let routes: [[String: Any]] = self.routes().map { route in
            let snapshot = route.breakerSnapshot(now: now)
            var entry: [String: Any] = [
                "route": route.name,
                "state": snapshot.state,
                "consecutive_failures": snapshot.consecutiveFailures,
                "window_requests": snapshot.windowRequests,
                "window_failures": snapshot.windowFailures,
                "recovery_timeout_seconds": snapshot.recoveryTimeout.seconds,
            ]
            if let probeIn = snapshot.probeIn {
                entry["probe_in_seconds"] = probeIn.seconds
            }
            return entry
        }
        return self.json(.ok, ["routes": routes])
    }

    /// Runs `action` for a request with the right bearer token. Without the variable set no
    /// token is right (403), so an unconfigured proxy cannot be drained by whoever reaches it.
    private func authorized(_ request: HTTPRequestHead, _ action: () -> Answer) -> Answer {
        guard let expected = ProcessInfo.processInfo.environment[self.tokenEnv], !expected.isEmpty else {
            return self.json(.forbidden, ["error": "admin actions are disabled: set \(self.tokenEnv)"])
        }
        // The scheme's name is case-insensitive (RFC 9110 §11.1): `bearer` is `Bearer`.
        let presented = request.headers.first(name: "authorization") ?? ""
        guard presented.utf8.count > 7, presented.prefix(7).lowercased() == "bearer ",
            constantTimeEquals(Array(presented.utf8.dropFirst(7)), Array(expected.utf8))
        else {
            return self.json(.unauthorized, ["error": "missing or wrong bearer token"])
        }
        return action()
    }

    private func methodNotAllowed(allow: String) -> Answer {
        var answer = self.json(.methodNotAllowed, ["error": "method not allowed"])
        answer.allow = allow
        return answer
    }

    private func json(_ status: HTTPResponseStatus, _ object: [String: Any]) -> Answer {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return Answer(status: status, body: String(decoding: data, as: UTF8.self))
    }
}

/// Compares secrets in time that depends only on their lengths, not on where they differ.
func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for (x, y) in zip(a, b) {
        difference |= x ^ y
    }
    return difference == 0
}

extension Duration {
    /// In seconds, as a JSON number.
    fileprivate var seconds: Double {
        Double(self.components.seconds) + Double(self.components.attoseconds) / 1e18
    }
}
