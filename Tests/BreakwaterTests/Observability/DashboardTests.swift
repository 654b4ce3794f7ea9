import Foundation
import Testing

/// The Grafana dashboard and the alert rules shipped in `observability/`.
@Suite struct DashboardTests {
    private static var directory: URL {
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { root.deleteLastPathComponent() }
        return root.appendingPathComponent("observability")
    }

    /// The metric names of SPEC's table (and the histogram's series).
    private static let known: Set<String> = [
        "breakwater_requests_total", "breakwater_request_duration_seconds_bucket", "breakwater_in_flight_requests",
        "breakwater_queued_requests", "breakwater_shed_total", "breakwater_circuit_breaker_state",
        "breakwater_circuit_breaker_transitions_total", "breakwater_retries_total", "breakwater_upstream_timeouts_total",
        "breakwater_upstream_ready", "breakwater_draining", "breakwater_config_reloads_total",
    ]

    private static func metricNames(in text: String) -> Set<String> {
        var names: Set<String> = []
        var current = ""
        for character in text + " " {
            if character.isLetter || character.isNumber || character == "_" {
                current.append(character)
            } else {
                if current.hasPrefix("breakwater_") { names.insert(current) }
                current = ""
            }
        }
        return names
    }

    @Test func theDashboardIsValidJSONAndUsesOnlyRealMetrics() throws {
        let data = try Data(contentsOf: Self.directory.appendingPathComponent("grafana-dashboard.json"))
        let dashboard = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let panels = try #require(dashboard["panels"] as? [[String: Any]])
        #expect(panels.count >= 6)
        let used = Self.metricNames(in: String(decoding: data, as: UTF8.self))
        #expect(used.isSubset(of: Self.known), "unknown: \(used.subtracting(Self.known))")
        #expect(used.contains("breakwater_circuit_breaker_state"))
        #expect(used.contains("breakwater_shed_total"))
    }

    @Test func theAlertRulesUseOnlyRealMetricsAndPassPromtool() throws {
        let path = Self.directory.appendingPathComponent("alerts.yml").path
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let used = Self.metricNames(in: text)
        #expect(used.isSubset(of: Self.known), "unknown: \(used.subtracting(Self.known))")
        for alert in ["BreakwaterCircuitBreakerOpen", "BreakwaterHighShedRate", "BreakwaterUpstreamNotReady", "BreakwaterRouteErrorRate"] {
            #expect(text.contains("alert: \(alert)"))
        }
        guard let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"].first(where: FileManager.default.isExecutableFile(atPath:)) else {
            return  // `apt-get install prometheus` provides it; .ci/run installs it when it can.
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: promtool)
        process.arguments = ["check", "rules", path]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        process.waitUntilExit()
        let report = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0, "\(report)")
    }
}
