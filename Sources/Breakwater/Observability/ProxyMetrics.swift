import CoreMetrics
import Foundation
import NIOConcurrencyHelpers
import NIOHTTP1
import Prometheus


/// The metric families of SPEC's table, recorded through swift-metrics with swift-prometheus as
/// the backend, and the registry `/metrics` exposes.
///
/// Handles are made once — per route, or per label combination the first time it is seen —
/// and kept, so recording on the data path is an atomic add on an existing handle.
public final class ProxyMetrics: Sendable {
    let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory
    let upstreamReady: CoreMetrics.Gauge
    let draining: CoreMetrics.Gauge
    /// Supervisor mode: how often the app (re)started or exited.
    let appExits: CoreMetrics.Counter
    private let reloadsOK: CoreMetrics.Counter
    private let reloadsFailed: CoreMetrics.Counter
    /// Brought up to `AccessLogWriter.linesDropped` at each scrape (the writer serves the
    /// whole process, this registry one proxy).
    private let accessLogDropped: CoreMetrics.Counter
    private let accessLogDroppedCounted = NIOLockedValueBox(0)
    private let process: ProcessMetrics

    /// From 1 ms to 30 s: what a proxy in front of one app sees.
    static let durationBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(2.5), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5),
        .seconds(10), .seconds(30),
    ]

    public init() {
        self.registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: self.registry)
        factory.defaultDurationHistogramBuckets = Self.durationBuckets
        self.factory = factory
        self.upstreamReady = CoreMetrics.Gauge(label: "breakwater_upstream_ready", factory: factory)
        self.draining = CoreMetrics.Gauge(label: "breakwater_draining", factory: factory)
        self.appExits = CoreMetrics.Counter(label: "breakwater_app_exits_total", factory: factory)
        self.reloadsOK = CoreMetrics.Counter(label: "breakwater_config_reloads_total", dimensions: [("result", "ok")], factory: factory)
        self.reloadsFailed = CoreMetrics.Counter(label: "breakwater_config_reloads_total", dimensions: [("result", "error")], factory: factory)
        self.accessLogDropped = CoreMetrics.Counter(label: "breakwater_access_log_dropped_total", factory: factory)
        self.process = ProcessMetrics(factory: factory)
    }

    private let workerHandles = NIOLockedValueBox<[Int: (ready: CoreMetrics.Gauge, ejections: CoreMetrics.Counter)]>([:])

    /// Supervisor mode: the per-worker series, made the first time a worker is seen.
    private func worker(_ index: Int) -> (ready: CoreMetrics.Gauge, ejections: CoreMetrics.Counter) {
        self.workerHandles.withLockedValue { handles in
            if let existing = handles[index] { return existing }
            let dimensions = [("worker", String(index))]
            let made = (
                CoreMetrics.Gauge(label: "breakwater_worker_ready", dimensions: dimensions, factory: self.factory),
                CoreMetrics.Counter(label: "breakwater_worker_ejections_total", dimensions: dimensions, factory: self.factory)
            )
            handles[index] = made
            return made
        }
    }

    public func workerReady(_ index: Int, _ ready: Bool) {
        self.worker(index).ready.record(ready ? 1 : 0)
    }

    func workerEjected(_ index: Int) {
        self.worker(index).ejections.increment()
    }

    public func recordReload(succeeded: Bool) {
        (succeeded ? self.reloadsOK : self.reloadsFailed).increment()
    }

    /// The exposition, in Prometheus text format 0.0.4.
    public func exposition() -> String {
        self.process.update()
        self.accessLogDropped.increment(by: self.accessLogDroppedCounted.advance(to: AccessLogWriter.linesDropped))
        return String(decoding: self.registry.emitToBuffer(), as: UTF8.self)
    }
}

/// One route's handles.
final class RouteMetrics: Sendable {
    private let route: String
    private let factory: PrometheusMetricsFactory
    let duration: CoreMetrics.Timer
    let inFlight: CoreMetrics.Meter
    let queued: CoreMetrics.Meter
    let retries: CoreMetrics.Counter
    let upstreamTimeouts: CoreMetrics.Counter
    private let breakerStates: [(state: String, gauge: CoreMetrics.Gauge)]
    private let transitions: [String: CoreMetrics.Counter]
    /// By `ProxyReason.ordinal`, made on a reason's first shed.
    private let sheds = NIOLockedValueBox([CoreMetrics.Counter?](repeating: nil, count: ProxyReason.allCases.count))

    init(route: String, metrics: ProxyMetrics) {
        let factory = metrics.factory
        self.route = route
        self.factory = factory
        let dimensions = [("route", route)]
        self.duration = Timer(label: "breakwater_request_duration_seconds", dimensions: dimensions, preferredDisplayUnit: .seconds, factory: factory)
        self.inFlight = CoreMetrics.Meter(label: "breakwater_in_flight_requests", dimensions: dimensions, factory: factory)
        self.queued = CoreMetrics.Meter(label: "breakwater_queued_requests", dimensions: dimensions, factory: factory)
        self.retries = CoreMetrics.Counter(label: "breakwater_retries_total", dimensions: dimensions, factory: factory)
        self.upstreamTimeouts = CoreMetrics.Counter(label: "breakwater_upstream_timeouts_total", dimensions: dimensions, factory: factory)
        let states = ["closed", "open", "half_open"]
        self.breakerStates = states.map { state in
            (state, CoreMetrics.Gauge(label: "breakwater_circuit_breaker_state", dimensions: [("route", route), ("state", state)], factory: factory))
        }
        self.transitions = Dictionary(uniqueKeysWithValues: states.map { state in
            (state, CoreMetrics.Counter(label: "breakwater_circuit_breaker_transitions_total", dimensions: [("route", route), ("to", state)], factory: factory))
        })
        self.showBreaker(state: "closed")
    }

    /// A `breakwater_requests_total` handle; event loops keep them (`EventLoopContext`).
    func makeRequestCounter(method: String, code: Int, reason: String) -> CoreMetrics.Counter {
        CoreMetrics.Counter(
            label: "breakwater_requests_total",
            dimensions: [("route", self.route), ("method", method), ("code", String(code)), ("reason", reason)],
            factory: self.factory
        )
    }

    /// One of the standard methods, or `OTHER`, so a client cannot grow the number of series.
    static func boundedMethod(_ method: HTTPMethod) -> String {
        switch method {
        case .GET, .HEAD, .POST, .PUT, .DELETE, .PATCH, .OPTIONS, .TRACE, .CONNECT: method.rawValue
        default: "OTHER"
        }
    }

    func recordShed(reason: ProxyReason) {
        let counter = self.sheds.withLockedValue { counters in
            if let counter = counters[reason.ordinal] { return counter }
            let counter = CoreMetrics.Counter(label: "breakwater_shed_total", dimensions: [("route", self.route), ("reason", reason.rawValue)], factory: self.factory)
            counters[reason.ordinal] = counter
            return counter
        }
        counter.increment()
    }

    func recordBreakerTransition(to state: String) {
        self.transitions[state]?.increment()
        self.showBreaker(state: state)
    }

    /// Sets the state gauges: 1 for `current`, 0 for the others (all 0 for nil: a removed route).
    func showBreaker(state current: String?) {
        for (state, gauge) in self.breakerStates {
            gauge.record(state == current ? 1 : 0)
        }
    }
}

/// The conventional `process_*` metrics, read from /proc at each scrape.
private final class ProcessMetrics: Sendable {
    let residentMemory: CoreMetrics.Gauge
    /// A counter, as Prometheus wants `_total`s: each scrape adds the CPU time used since the last.
    let cpuSeconds: FloatingPointCounter
    private let cpuSecondsCounted = NIOLockedValueBox(0.0)
    let openFileDescriptors: CoreMetrics.Gauge
    let startTime: CoreMetrics.Gauge

    init(factory: PrometheusMetricsFactory) {
        self.residentMemory = CoreMetrics.Gauge(label: "process_resident_memory_bytes", factory: factory)
        self.cpuSeconds = FloatingPointCounter(label: "process_cpu_seconds_total", factory: factory)
        self.openFileDescriptors = CoreMetrics.Gauge(label: "process_open_fds", factory: factory)
        self.startTime = CoreMetrics.Gauge(label: "process_start_time_seconds", factory: factory)
        self.startTime.record(Date().timeIntervalSince1970)
    }

    func update() {
        let pageSize = Double(sysconf(Int32(_SC_PAGESIZE)))
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
            let afterName = stat.lastIndex(of: ")")
        {
            // Fields after the command name: state is field 3; utime 14, stime 15, rss 24.
            let fields = stat[stat.index(after: afterName)...].split(separator: " ")
            if fields.count > 21, let user = Double(fields[11]), let system = Double(fields[12]), let pages = Double(fields[21]) {
                self.cpuSeconds.increment(by: self.cpuSecondsCounted.advance(to: (user + system) / ticks))
                self.residentMemory.record(pages * pageSize)
            }
        }
        if let descriptors = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
            self.openFileDescriptors.record(descriptors.count)
        }
    }
}

extension NIOLockedValueBox where Value: Comparable & AdditiveArithmetic {
    /// For a counter whose running total is kept elsewhere (the kernel's CPU time, the access
    /// log's dropped lines) and brought up to date at each scrape: what `total` adds to the
    /// amount counted so far, which it becomes. Never negative, as a counter only goes up.
    func advance(to total: Value) -> Value {
        self.withLockedValue { counted in
            defer { counted = max(counted, total) }
            return max(.zero, total - counted)
        }
    }
}
