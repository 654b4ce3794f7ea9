import Foundation
import Logging
import TOMLKit

/// Reads and validates proxy.conf: at startup, at `breakwater check`, and at reload.
public enum ConfigLoader {
    /// Reads the file at `path`; its name in messages is `path` as given.
    ///
    /// Synchronous file I/O, on purpose: it runs before the event loops start, or (reload) on a
    /// task of its own, never on an event loop.
    public static func load(path: String) throws(ConfigErrors) -> ProxyConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            let reason = FileManager.default.fileExists(atPath: path) ? "cannot read the file" : "no such file"
            throw ConfigErrors(problems: [ConfigProblem(file: path, line: nil, keyPath: "", message: reason)])
        }
        return try self.parse(text, fileName: path)
    }

    /// Parses and validates `text`, reporting every problem at once.
    public static func parse(_ text: String, fileName: String) throws(ConfigErrors) -> ProxyConfig {
        let log = ProblemLog(fileName: fileName, text: text)
        let crashers = TOMLPrecheck.findings(in: text)
        guard crashers.isEmpty else {
            throw ConfigErrors(problems: crashers.map { ConfigProblem(file: fileName, line: $0.line, keyPath: "", message: $0.message) })
        }
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            log.report(syntaxError: error)
            throw ConfigErrors(problems: log.problems)
        } catch {
            throw ConfigErrors(problems: [ConfigProblem(file: fileName, line: nil, keyPath: "", message: "\(error)")])
        }
        let config = ConfigSchema(log: log).read(TableReader(table, path: "", log: log))
        guard log.problems.isEmpty else {
            throw ConfigErrors(problems: log.problems.sorted { ($0.line ?? .max, $0.keyPath) < ($1.line ?? .max, $1.keyPath) })
        }
        return config
    }
}

/// The schema of SPEC.md, table by table. Each reader starts from the defaults (or, for routes,
/// from `[defaults]`) and overrides what the file sets, so inheritance is key by key.
private struct ConfigSchema {
    let log: ProblemLog

    func read(_ root: TableReader) -> ProxyConfig {
        var config = ProxyConfig()
        if let text = root.string("listen") {
            config.listen = self.address(text, at: root, "listen") ?? config.listen
        }
        if let text = root.string("upstream") {
            switch ConfigUnits.upstream(text) {
            case .tcp(let address)? where address.port == 0:
                root.report("upstream", "port 0 in \"\(text)\": give the port the app listens on")
            case let upstream?:
                config.upstream = upstream
            case nil:
                root.report("upstream", "invalid address \"\(text)\": use \"host:port\" or \"unix:/absolute/path\"")
            }
        }
        if let table = root.table("server") { config.server = self.server(table) }
        if let table = root.table("upstream_pool") { config.upstreamPool = self.upstreamPool(table) }
        if let table = root.table("admin") { config.admin = self.admin(table) }
        if let table = root.table("concurrency") { config.concurrency = self.concurrency(table, base: ConcurrencyConfig()) }
        if let table = root.table("readiness") { config.readiness = self.readiness(table) }
        if let table = root.table("drain") { config.drain = self.drain(table) }
        if let table = root.table("trace") { config.trace = self.trace(table) }
        if let table = root.table("log") { config.log = self.logConfig(table) }
        if let table = root.table("app") { config.app = self.app(table) }
        let defaults = root.table("defaults").map { self.policy($0, base: RoutePolicy()) } ?? RoutePolicy()
        config.routes = self.routes(root.tables("route") ?? [], defaults: defaults)
        root.finish()

        if config.upstream == nil && config.app == nil && !root.has("upstream") {
            self.log.report("upstream", "missing required key (the app's \"host:port\" or \"unix:/path\")", exactLine: true)
        }
        if Self.overlap(config.listen, config.admin.listen) {
            // Point at whichever of the two the file sets (the other is a default).
            let key = self.log.lineIndex.exactLine(of: "admin.listen") != nil ? "admin.listen" : "listen"
            let other = key == "listen" ? ("admin.listen", config.admin.listen) : ("listen", config.listen)
            self.log.report(key, "must differ from \(other.0) (\(other.1)): both would take port \(config.listen.port)")
        }
        if case .tcp(let upstream) = config.upstream, Self.reaches(upstream, config.listen) {
            self.log.report("upstream", "is the proxy's own listen address (\(config.listen)): every request would come back to it")
        }
        if let app = config.app, let table = root.table("app") {
            // The app listens on base_port (and up) unless one worker without {port} uses
            // `upstream` as it is; with the command given after `--`, the file cannot tell.
            if config.upstream == nil || app.usesPortPlaceholder {
                let ports = app.basePort...(app.basePort + app.workers - 1)
                for (key, address) in [("listen", config.listen), ("admin.listen", config.admin.listen)] where ports.contains(address.port) {
                    let clash = app.workers > 1 ? "ports \(ports.lowerBound)-\(ports.upperBound) include \(key)'s (\(address.port))" : "port \(app.basePort) is \(key)'s"
                    table.report("base_port", "the app's \(clash): the app could never listen")
                }
            }
            if let problem = app.sharedPortProblem {
                table.report("command", problem)
            }
        }
        return config
    }

    /// Whether two listeners would take the same port: the same address, or one on a wildcard
    /// (`0.0.0.0` takes every IPv4 address, `::` every address).
    private static func overlap(_ first: HostPort, _ second: HostPort) -> Bool {
        guard first.port == second.port, first.port != 0 else { return false }
        let isIPv6 = { (host: String) in host.contains(":") }
        let covers = { (wildcard: HostPort, other: HostPort) in
            wildcard.host == "::" || (wildcard.host == "0.0.0.0" && !isIPv6(other.host))
        }
        return first.host == second.host || covers(first, second) || covers(second, first)
    }

    /// Whether connecting to `upstream` reaches a proxy listening on `listen`.
    private static func reaches(_ upstream: HostPort, _ listen: HostPort) -> Bool {
        guard upstream.port == listen.port, listen.port != 0 else { return false }
        let loopback: Set<String> = ["127.0.0.1", "localhost", "::1"]
        return upstream.host == listen.host || (["0.0.0.0", "::"].contains(listen.host) && loopback.contains(upstream.host))
    }

    private func address(_ text: String, at table: TableReader, _ key: String) -> HostPort? {
        guard let address = ConfigUnits.hostPort(text) else {
            table.report(key, "invalid address \"\(text)\": use \"host:port\", like \"0.0.0.0:8080\"")
            return nil
        }
        return address
    }

    private func server(_ table: TableReader) -> ServerConfig {
        var server = ServerConfig()
        server.threads = table.int("threads", in: 1...256) ?? server.threads
        server.headerReadTimeout = table.duration("header_read_timeout") ?? server.headerReadTimeout
        server.idleTimeout = table.duration("idle_timeout") ?? server.idleTimeout
        server.maxHeaderBytes = table.size("max_header_bytes") ?? server.maxHeaderBytes
        server.maxBodyBytes = table.size("max_body_bytes") ?? server.maxBodyBytes
        server.maxConnections = table.int("max_connections", in: 1...10_000_000)
        table.finish()
        return server
    }

    private func upstreamPool(_ table: TableReader) -> UpstreamPoolConfig {
        var pool = UpstreamPoolConfig()
        pool.connectTimeout = table.duration("connect_timeout") ?? pool.connectTimeout
        pool.maxIdle = table.int("max_idle", in: 0...100_000) ?? pool.maxIdle
        pool.idleTimeout = table.duration("idle_timeout") ?? pool.idleTimeout
        table.finish()
        return pool
    }

    private func admin(_ table: TableReader) -> AdminConfig {
        var admin = AdminConfig()
        if let text = table.string("listen") {
            admin.listen = self.address(text, at: table, "listen") ?? admin.listen
        }
        if let name = table.string("token_env") {
            if name.isEmpty || name.contains("=") {
                table.report("token_env", "must name an environment variable, got \"\(name)\"")
            } else {
                admin.tokenEnv = name
            }
        }
        table.finish()
        return admin
    }

    private func concurrency(_ table: TableReader, base: ConcurrencyConfig) -> ConcurrencyConfig {
        var limits = base
        limits.softLimit = table.int("soft_limit", in: 1...1_000_000) ?? limits.softLimit
        limits.hardLimit = table.int("hard_limit", in: 1...1_000_000) ?? limits.hardLimit
        // Zero: a request that finds no free slot is refused at once rather than queued.
        limits.queueTimeout = table.duration("queue_timeout", allowZero: true) ?? limits.queueTimeout
        table.finish()
        table.keepInOrder(
            "soft_limit", &limits.softLimit, "hard_limit", &limits.hardLimit,
            reportedKey: "hard_limit",
            problem: { soft, hard in "hard_limit (\(hard)) is below soft_limit (\(soft))" }
        )
        return limits
    }

    private func readiness(_ table: TableReader) -> ReadinessConfig {
        var readiness = ReadinessConfig()
        readiness.path = self.path(table, "path", allowingQuery: true) ?? readiness.path
        readiness.interval = table.duration("interval") ?? readiness.interval
        readiness.timeout = table.duration("timeout") ?? readiness.timeout
        readiness.healthyThreshold = table.int("healthy_threshold", in: 1...1000) ?? readiness.healthyThreshold
        readiness.unhealthyThreshold = table.int("unhealthy_threshold", in: 1...1000) ?? readiness.unhealthyThreshold
        readiness.hold = table.duration("hold", allowZero: true) ?? readiness.hold
        readiness.publicPath = self.path(table, "public_path")
        table.finish()
        return readiness
    }

    private func drain(_ table: TableReader) -> DrainConfig {
        var drain = DrainConfig()
        drain.delay = table.duration("delay", allowZero: true) ?? drain.delay
        drain.timeout = table.duration("timeout") ?? drain.timeout
        table.finish()
        return drain
    }

    /// Fields the proxy writes on answers of its own, beside those `FieldName` knows.
    private static let proxysOwnAnswerFields: Set<String> = ["content-type", "retry-after", "x-breakwater-reason"]

    private func trace(_ table: TableReader) -> TraceConfig {
        var trace = TraceConfig()
        if let header = table.string("request_id_header") {
            if !ConfigUnits.isToken(header) {
                table.report("request_id_header", "\"\(header)\" is not a valid header name")
            } else if FieldName(header) != .other || Self.proxysOwnAnswerFields.contains(header.lowercased()) {
                table.report("request_id_header", "\"\(header)\" is a field the proxy reads or writes itself: name one of its own, like \"X-Request-ID\"")
            } else {
                trace.requestIDHeader = header
            }
        }
        trace.traceparent = table.bool("traceparent") ?? trace.traceparent
        table.finish()
        return trace
    }

    private func logConfig(_ table: TableReader) -> LogConfig {
        var log = LogConfig()
        log.access = table.bool("access") ?? log.access
        if let level = table.string("level") {
            if let parsed = Logger.Level(rawValue: level.lowercased()) {
                log.level = parsed
            } else {
                let levels = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
                table.report("level", "unknown level \"\(level)\": use one of \(levels)")
            }
        }
        table.finish()
        return log
    }

    private func app(_ table: TableReader) -> AppConfig {
        var app = AppConfig()
        app.command = table.strings("command") ?? app.command
        app.workers = table.int("workers", in: 1...64) ?? app.workers
        app.basePort = table.int("base_port", in: 1...65535) ?? app.basePort
        if let restart = table.string("restart") {
            if let policy = RestartPolicy(rawValue: restart) {
                app.restart = policy
            } else {
                table.report("restart", "must be \"always\", \"on-failure\" or \"never\", got \"\(restart)\"")
            }
        }
        app.restartBackoff = table.duration("restart_backoff") ?? app.restartBackoff
        app.stopTimeout = table.duration("stop_timeout") ?? app.stopTimeout
        table.finish()
        if app.basePort + app.workers - 1 > 65535 {
            table.report("workers", "ports from base_port \(app.basePort) run past 65535")
        }
        return app
    }

    // MARK: Routes

    private func routes(_ tables: [TableReader], defaults: RoutePolicy) -> [RouteConfig] {
        var routes: [RouteConfig] = []
        var names: Set<String> = ["default"]
        for table in tables {
            let name = table.string("name")
            let exact = self.path(table, "path")
            let prefix = self.path(table, "path_prefix")
            let methods = self.methods(table)
            let policy = self.policy(table, base: defaults)
            table.finish()
            guard let name else {
                if !table.has("name") { self.log.report(table.keyPath("name"), "missing required key") }
                continue
            }
            if name == "default" {
                table.report("name", "\"default\" is the implicit route for unmatched requests; set its policy in [defaults]")
            } else if !names.insert(name).inserted {
                table.report("name", "duplicate route name \"\(name)\"")
            } else if name.isEmpty || !name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "_.-".contains($0)) }) {
                table.report("name", "\"\(name)\" may use only letters, digits, '_', '.' and '-' (it becomes a metric label)")
            }
            let match: PathMatch
            switch (exact, prefix) {
            case (let exact?, nil): match = .exact(exact)
            case (nil, let prefix?): match = .prefix(prefix)
            case (.some, .some):
                table.report("path_prefix", "set either path or path_prefix, not both")
                continue
            case (nil, nil):
                if !table.has("path") && !table.has("path_prefix") {
                    self.log.report(table.path, "a route needs path or path_prefix")
                }
                continue
            }
            let route = RouteConfig(name: name, match: match, methods: methods, policy: policy)
            if let earlier = routes.first(where: { $0.matcher.shadows(route.matcher) }) {
                table.report(
                    exact != nil ? "path" : "path_prefix",
                    "can never match: route \"\(earlier.name)\" comes first and takes all its requests (routes match in file order; put the narrower one first)"
                )
            }
            routes.append(route)
        }
        routes.append(RouteConfig(name: "default", match: .any, methods: nil, policy: defaults))
        return routes
    }

    /// A path to match or to request; a probe's (`readiness.path`) may carry a query.
    private func path(_ table: TableReader, _ key: String, allowingQuery: Bool = false) -> String? {
        guard let path = table.string(key) else { return nil }
        let refused = { (character: Character) in
            character == " " || character == "#" || (character == "?" && !allowingQuery)
                || character.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }
        }
        guard path.hasPrefix("/"), !path.contains(where: refused) else {
            let what = allowingQuery ? "no spaces, control characters or fragment" : "no spaces, control characters, query or fragment"
            table.report(key, "must be a path starting with \"/\" (\(what)), got \"\(path.unicodeScalars.map { $0.escaped(asASCII: false) }.joined())\"")
            return nil
        }
        return path
    }

    private func methods(_ table: TableReader) -> Set<String>? {
        guard let methods = table.strings("methods") else { return nil }
        if methods.isEmpty {
            table.report("methods", "must list at least one method (or leave the key out for all)")
            return nil
        }
        if let bad = methods.first(where: { !ConfigUnits.isToken($0) }) {
            table.report("methods", "\"\(bad)\" is not a valid method")
            return nil
        }
        return Set(methods.map { $0.uppercased() })
    }

    /// A route's (or `[defaults]`'s) policy keys over `base`. In `[defaults]` the route-only
    /// keys (name, path, ...) are not read, so they come out as unknown keys.
    private func policy(_ table: TableReader, base: RoutePolicy) -> RoutePolicy {
        var policy = base
        policy.timeout = table.duration("timeout") ?? policy.timeout
        policy.bodyTimeout = table.duration("body_timeout") ?? policy.bodyTimeout
        if let limits = table.table("concurrency") {
            policy.concurrency = self.concurrency(limits, base: base.concurrency ?? ConcurrencyConfig())
        }
        if let breaker = table.table("breaker") { policy.breaker = self.breaker(breaker, base: base.breaker) }
        if let retry = table.table("retry") { policy.retry = self.retry(retry, base: base.retry) }
        if let fallback = table.table("fallback") { policy.fallback = self.fallback(fallback, base: base.fallback ?? FallbackConfig()) }
        if table.path != "defaults" {
            return policy  // the route's own keys are read by `routes`; it calls `finish`
        }
        table.finish()
        return policy
    }

    private func breaker(_ table: TableReader, base: BreakerConfig) -> BreakerConfig {
        var breaker = base
        breaker.failureThreshold = table.int("failure_threshold", in: 1...1_000_000) ?? breaker.failureThreshold
        breaker.failureRate = table.double("failure_rate", in: 0.01...1) ?? breaker.failureRate
        breaker.window = table.int("window", in: 1...100_000) ?? breaker.window
        breaker.minimumRequests = table.int("minimum_requests", in: 1...100_000) ?? breaker.minimumRequests
        breaker.recoveryTimeout = table.duration("recovery_timeout") ?? breaker.recoveryTimeout
        breaker.maxRecoveryTimeout = table.duration("max_recovery_timeout") ?? breaker.maxRecoveryTimeout
        breaker.successThreshold = table.int("success_threshold", in: 1...1000) ?? breaker.successThreshold
        breaker.halfOpenRequests = table.int("half_open_requests", in: 1...1000) ?? breaker.halfOpenRequests
        breaker.failureStatuses = table.ints("failure_statuses", in: 100...599).map(Set.init) ?? breaker.failureStatuses
        table.finish()
        table.keepInOrder(
            "recovery_timeout", &breaker.recoveryTimeout, "max_recovery_timeout", &breaker.maxRecoveryTimeout,
            reportedKey: "max_recovery_timeout",
            problem: { _, _ in "must not be shorter than recovery_timeout" }
        )
        table.keepInOrder(
            "minimum_requests", &breaker.minimumRequests, "window", &breaker.window,
            reportedKey: "minimum_requests",
            problem: { minimum, window in "\(minimum) can never be reached in a window of \(window)" }
        )
        return breaker
    }

    private func retry(_ table: TableReader, base: RetryConfig) -> RetryConfig {
        var retry = base
        retry.attempts = table.int("attempts", in: 1...10) ?? retry.attempts
        // Zero: retry at once.
        retry.backoff = table.duration("backoff", allowZero: true) ?? retry.backoff
        retry.maxBackoff = table.duration("max_backoff", allowZero: true) ?? retry.maxBackoff
        if let conditions = table.strings("on") {
            let parsed = conditions.map { ($0, RetryCondition($0)) }
            if let bad = parsed.first(where: { $0.1 == nil }) {
                table.report("on", "unknown condition \"\(bad.0)\": use \"connect-failure\", \"reset\", \"timeout\" or a status code")
            } else {
                retry.on = Set(parsed.compactMap(\.1))
            }
        }
        retry.budget = table.double("budget", in: 0...1) ?? retry.budget
        table.finish()
        table.keepInOrder(
            "backoff", &retry.backoff, "max_backoff", &retry.maxBackoff,
            reportedKey: "max_backoff",
            problem: { _, _ in "must not be shorter than backoff" }
        )
        return retry
    }

    private func fallback(_ table: TableReader, base: FallbackConfig) -> FallbackConfig {
        var fallback = base
        // A final status that carries a body: a 1xx is no answer, and 204 and 304 have no body.
        fallback.status = table.int("status", in: 200...599) ?? fallback.status
        if let contentType = table.string("content_type") {
            // It becomes a header value: a line break or other control character would split
            // the response (found by fuzz/FuzzConfig).
            if contentType.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
                table.report("content_type", "must not contain line breaks or control characters")
            } else {
                fallback.contentType = contentType
            }
        }
        fallback.body = table.string("body") ?? fallback.body
        table.finish()
        if (fallback.status == 204 || fallback.status == 304) && !fallback.body.isEmpty {
            table.report("status", "\(fallback.status) answers carry no body; use another status or an empty body")
        }
        return fallback
    }
}
