@testable import Breakwater
import Foundation
import Testing

@Suite struct ConfigLoaderTests {
    /// A reload's check in a child process: an exit code, whatever it is, means the parser
    /// survived the file (parsing it in the proxy is then safe); death by a signal (toml++'s
    /// abort is SIGABRT, a Swift trap SIGILL or SIGTRAP) means it did not, and the reload is
    /// refused without the proxy touching the file.
    @Test func aReloadCheckKilledByASignalMeansTheFileCrashesTheParser() {
        #expect(ConfigCheckProcess.verdict(exitStatus: 0) == .completed)
        #expect(ConfigCheckProcess.verdict(exitStatus: 1) == .completed)
        #expect(ConfigCheckProcess.verdict(exitStatus: 128 + SIGABRT) == .crashed(signal: SIGABRT))
        #expect(ConfigCheckProcess.verdict(exitStatus: 128 + SIGILL) == .crashed(signal: SIGILL))
    }

    /// SPEC.md's example file, every key set.
    static let complete = """
        listen   = "0.0.0.0:8080"
        upstream = "127.0.0.1:8000"

        [server]
        threads             = 2
        header_read_timeout = "10s"
        idle_timeout        = "75s"
        max_header_bytes    = "32KB"
        max_body_bytes      = "10MB"
        max_connections     = 10000

        [upstream_pool]
        connect_timeout = "1s"
        max_idle        = 64
        idle_timeout    = "60s"

        [admin]
        listen    = "127.0.0.1:9901"
        token_env = "BREAKWATER_ADMIN_TOKEN"

        [concurrency]
        soft_limit    = 200
        hard_limit    = 250
        queue_timeout = "5s"

        [readiness]
        path                = "/health"
        interval            = "2s"
        timeout             = "1s"
        healthy_threshold   = 1
        unhealthy_threshold = 3
        hold                = "10s"
        public_path         = "/__breakwater/ready"

        [drain]
        delay   = "0s"
        timeout = "20s"

        [trace]
        request_id_header = "X-Request-ID"
        traceparent       = true

        [log]
        access = true
        level  = "info"

        [app]
        command         = ["uvicorn", "app.main:app", "--port", "{port}"]
        workers         = 1
        base_port       = 8000
        restart         = "always"
        restart_backoff = "1s"
        stop_timeout    = "10s"

        [defaults]
        timeout = "30s"

        [defaults.retry]
        attempts = 2

        [[route]]
        name        = "webhooks"
        path_prefix = "/api/v1/webhooks/"
        methods     = ["POST"]
        timeout     = "10s"
        body_timeout = "30s"

        [route.concurrency]
        soft_limit = 20
        hard_limit = 40

        [route.breaker]
        failure_threshold  = 5
        failure_rate       = 0.5
        window             = 100
        minimum_requests   = 10
        recovery_timeout   = "30s"
        max_recovery_timeout = "5m"
        success_threshold  = 3
        half_open_requests = 1
        failure_statuses   = [500, 502, 503, 504]

        [route.retry]
        backoff     = "25ms"
        max_backoff = "250ms"
        on          = ["connect-failure", "reset", "503"]
        budget      = 0.2

        [route.fallback]
        status       = 503
        content_type = "application/json"
        body         = '{"error":"temporarily unavailable"}'

        [[route]]
        name = "health"
        path = "/health"
        """

    private func problems(_ text: String) -> [String] {
        do {
            _ = try ConfigLoader.parse(text, fileName: "proxy.conf")
            return []
        } catch {
            return error.problems.map(\.description)
        }
    }

    @Test func aCompleteFileParsesToWhatItSays() throws {
        let config = try ConfigLoader.parse(Self.complete, fileName: "proxy.conf")
        #expect(config.listen == HostPort(host: "0.0.0.0", port: 8080))
        #expect(config.upstream == .tcp(HostPort(host: "127.0.0.1", port: 8000)))
        #expect(config.server.threads == 2)
        #expect(config.server.maxHeaderBytes == 32 * 1024)
        #expect(config.server.maxBodyBytes == 10 * 1024 * 1024)
        #expect(config.server.maxConnections == 10_000)
        #expect(config.readiness?.publicPath == "/__breakwater/ready")
        #expect(config.app?.command == ["uvicorn", "app.main:app", "--port", "{port}"])
        #expect(config.app?.restart == .always)
        #expect(config.log.level == .info)

        #expect(config.routes.map(\.name) == ["webhooks", "health", "default"])
        let webhooks = config.routes[0]
        #expect(webhooks.match == .prefix("/api/v1/webhooks/"))
        #expect(webhooks.methods == ["POST"])
        #expect(webhooks.policy.timeout == .seconds(10))
        #expect(webhooks.policy.concurrency == ConcurrencyConfig(softLimit: 20, hardLimit: 40, queueTimeout: .seconds(5)))
        #expect(webhooks.policy.breaker.maxRecoveryTimeout == .seconds(300))
        #expect(webhooks.policy.retry.on == [.connectFailure, .reset, .status(503)])
        #expect(webhooks.policy.fallback?.body == #"{"error":"temporarily unavailable"}"#)
        // Inherited key by key: `attempts` comes from [defaults.retry], the rest from the route.
        #expect(webhooks.policy.retry.attempts == 2)
        #expect(config.routes[1].match == .exact("/health"))
        #expect(config.routes[1].policy.retry.attempts == 2)
        #expect(config.routes[1].policy.fallback == nil)
        #expect(config.routes[2].match == .any)
        #expect(config.routes[2].policy.timeout == .seconds(30))
    }

    /// Every key, each set to something other than its default, lands where it belongs: a
    /// loader that skipped a key would leave its default, and the comparison of the whole
    /// configuration would show it.
    @Test func everyKeyIsReadIntoItsSetting() throws {
        let config = try ConfigLoader.parse(
            """
            listen = "127.0.0.1:8081"
            upstream = "unix:/run/app.sock"
            [server]
            threads = 3
            header_read_timeout = "11s"
            idle_timeout = "76s"
            max_header_bytes = "16KB"
            max_body_bytes = "2MB"
            max_connections = 500
            [upstream_pool]
            connect_timeout = "2s"
            max_idle = 8
            idle_timeout = "4s"
            [admin]
            listen = "127.0.0.1:9902"
            token_env = "MY_TOKEN"
            [concurrency]
            soft_limit = 20
            hard_limit = 30
            queue_timeout = "6s"
            [readiness]
            path = "/ready?deep=1"
            interval = "3s"
            timeout = "500ms"
            healthy_threshold = 2
            unhealthy_threshold = 4
            hold = "12s"
            public_path = "/_ready"
            [drain]
            delay = "1s"
            timeout = "21s"
            [trace]
            request_id_header = "X-Correlation-ID"
            traceparent = false
            [log]
            access = false
            level = "debug"
            [app]
            command = ["app", "{port}"]
            workers = 2
            base_port = 9000
            restart = "on-failure"
            restart_backoff = "2s"
            stop_timeout = "11s"
            [defaults]
            timeout = "31s"
            body_timeout = "32s"
            [[route]]
            name = "r"
            path = "/r"
            methods = ["PUT", "get"]
            [route.concurrency]
            soft_limit = 2
            hard_limit = 3
            queue_timeout = "1s"
            [route.breaker]
            failure_threshold = 6
            failure_rate = 0.25
            window = 50
            minimum_requests = 20
            recovery_timeout = "40s"
            max_recovery_timeout = "10m"
            success_threshold = 2
            half_open_requests = 4
            failure_statuses = [500, 429]
            [route.retry]
            attempts = 4
            backoff = "50ms"
            max_backoff = "1s"
            on = ["timeout", "502"]
            budget = 0.5
            [route.fallback]
            status = 200
            content_type = "text/plain"
            body = "stale"
            """,
            fileName: "proxy.conf"
        )
        var expected = ProxyConfig()
        expected.listen = HostPort(host: "127.0.0.1", port: 8081)
        expected.upstream = .unix(path: "/run/app.sock")
        expected.server = ServerConfig(
            threads: 3, headerReadTimeout: .seconds(11), idleTimeout: .seconds(76), maxHeaderBytes: 16 * 1024,
            maxBodyBytes: 2 * 1024 * 1024, maxConnections: 500
        )
        expected.upstreamPool = UpstreamPoolConfig(connectTimeout: .seconds(2), maxIdle: 8, idleTimeout: .seconds(4))
        expected.admin = AdminConfig(listen: HostPort(host: "127.0.0.1", port: 9902), tokenEnv: "MY_TOKEN")
        expected.concurrency = ConcurrencyConfig(softLimit: 20, hardLimit: 30, queueTimeout: .seconds(6))
        expected.readiness = ReadinessConfig(
            path: "/ready?deep=1", interval: .seconds(3), timeout: .milliseconds(500), healthyThreshold: 2,
            unhealthyThreshold: 4, hold: .seconds(12), publicPath: "/_ready"
        )
        expected.drain = DrainConfig(delay: .seconds(1), timeout: .seconds(21))
        expected.trace = TraceConfig(requestIDHeader: "X-Correlation-ID", traceparent: false)
        expected.log = LogConfig(access: false, level: .debug)
        var app = AppConfig()
        (app.command, app.workers, app.basePort, app.restart) = (["app", "{port}"], 2, 9000, .onFailure)
        (app.restartBackoff, app.stopTimeout) = (.seconds(2), .seconds(11))
        expected.app = app
        var defaults = RoutePolicy()
        (defaults.timeout, defaults.bodyTimeout) = (.seconds(31), .seconds(32))
        var policy = defaults
        policy.concurrency = ConcurrencyConfig(softLimit: 2, hardLimit: 3, queueTimeout: .seconds(1))
        policy.breaker = BreakerConfig(
            failureThreshold: 6, failureRate: 0.25, window: 50, minimumRequests: 20, recoveryTimeout: .seconds(40),
            maxRecoveryTimeout: .seconds(600), successThreshold: 2, halfOpenRequests: 4, failureStatuses: [500, 429]
        )
        policy.retry = RetryConfig(attempts: 4, backoff: .milliseconds(50), maxBackoff: .seconds(1), on: [.timeout, .status(502)], budget: 0.5)
        policy.fallback = FallbackConfig(status: 200, contentType: "text/plain", body: "stale")
        expected.routes = [
            RouteConfig(name: "r", match: .exact("/r"), methods: ["PUT", "GET"], policy: policy),
            RouteConfig(name: "default", match: .any, methods: nil, policy: defaults),
        ]
        #expect(config == expected)
    }

    @Test func aMinimalFileTakesEveryDefault() throws {
        let config = try ConfigLoader.parse(#"upstream = "127.0.0.1:8000""#, fileName: "proxy.conf")
        var expected = ProxyConfig()
        expected.upstream = .tcp(HostPort(host: "127.0.0.1", port: 8000))
        #expect(config == expected)
        #expect(config.routes.count == 1)
    }

    @Test func addressesTakeEveryForm() throws {
        let config = try ConfigLoader.parse(
            "listen = \"[::1]:9000\"\nupstream = \"unix:/run/app.sock\"\n",
            fileName: "proxy.conf"
        )
        #expect(config.listen == HostPort(host: "::1", port: 9000))
        #expect(config.listen.description == "[::1]:9000")
        #expect(config.upstream == .unix(path: "/run/app.sock"))
    }

    @Test func theExampleFileIsValid() throws {
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { root.deleteLastPathComponent() }
        let config = try ConfigLoader.load(path: root.appendingPathComponent("proxy.conf.example").path)
        let defaults = try ConfigLoader.parse(#"upstream = "127.0.0.1:8000""#, fileName: "x")
        // Every top-level value in the example is the default it documents.
        #expect(config.server == defaults.server)
        #expect(config.upstreamPool == defaults.upstreamPool)
        #expect(config.concurrency == defaults.concurrency)
        #expect(config.drain == defaults.drain)
        #expect(config.routes.last == defaults.routes.last)
        #expect(config.routes.map(\.name) == ["webhooks", "api", "default"])
        #expect(config.routes[0].policy.retry.attempts == 1)
        #expect(config.routes[0].policy.breaker == defaults.routes[0].policy.breaker)
        #expect(config.routes[1].policy.fallback != nil)
    }

    @Test func anUnknownKeyIsNamedWithItsLine() {
        #expect(problems("upstream = \"127.0.0.1:8000\"\nlisten_port = 80\n") == ["proxy.conf:2: listen_port: unknown key"])
    }

    @Test func anUnknownKeyInARouteSubtableIsNamedWithItsRoute() {
        let text = """
            upstream = "127.0.0.1:8000"
            [[route]]
            name = "a"
            path = "/a"
            [[route]]
            name = "b"
            path = "/b"
            [route.breaker]
            failure_threshold = 2
            bogus = 1
            """
        #expect(problems(text) == ["proxy.conf:10: route[2].breaker.bogus: unknown key"])
    }

    @Test func aWrongTypeSaysWhatWasExpected() {
        #expect(problems("upstream = \"127.0.0.1:8000\"\n[server]\nthreads = \"two\"\n")
            == [#"proxy.conf:3: server.threads: expected an integer, got string "two""#])
    }

    @Test func aBadDurationShowsTheSyntax() {
        #expect(problems("upstream = \"127.0.0.1:8000\"\n[server]\nidle_timeout = \"75\"\n")
            == [#"proxy.conf:3: server.idle_timeout: invalid duration "75": use a number with a unit, like "250ms", "2s" or "1m""#])
        #expect(problems("upstream = \"127.0.0.1:8000\"\n[server]\nidle_timeout = 75\n")
            == [#"proxy.conf:3: server.idle_timeout: expected a duration string like "2s", got integer 75"#])
    }

    /// Zero is taken where it means something — no queueing, no wait before a retry, no hold,
    /// no delay — and refused where nothing could work with it.
    @Test func zeroIsTakenWhereItMeansSomething() throws {
        let configuration = try ConfigLoader.parse(
            "upstream = \"127.0.0.1:8000\"\n[concurrency]\nqueue_timeout = \"0s\"\n[defaults.retry]\nbackoff = \"0ms\"\nmax_backoff = \"0ms\"\n",
            fileName: "proxy.conf"
        )
        #expect(configuration.concurrency.queueTimeout == .zero)
        let retry = try #require(configuration.routes.last).policy.retry
        #expect(retry.backoff == .zero)
        #expect(retry.maxBackoff == .zero)
        #expect(problems("upstream = \"127.0.0.1:8000\"\n[defaults]\ntimeout = \"0s\"\n")
            == ["proxy.conf:3: defaults.timeout: must be longer than zero"])
    }

    @Test func aBadSizeShowsTheSyntax() {
        #expect(problems("upstream = \"127.0.0.1:8000\"\n[server]\nmax_body_bytes = \"10 parsecs\"\n")
            == [#"proxy.conf:3: server.max_body_bytes: invalid size "10 parsecs": use bytes or a number with a unit, like "64KB" or "10MB""#])
    }

    @Test func aHardLimitBelowTheSoftLimitIsImpossible() {
        #expect(problems("upstream = \"127.0.0.1:8000\"\n[concurrency]\nsoft_limit = 10\nhard_limit = 5\n")
            == ["proxy.conf:4: concurrency.hard_limit: hard_limit (5) is below soft_limit (10)"])
    }

    /// One key of a pair set alone moves its partner's default out of its way, instead of an
    /// error about a default the file never wrote; the two set against each other are still
    /// an error (above).
    @Test func aKeySetAloneMovesItsPartnersDefault() throws {
        let configuration = try ConfigLoader.parse(
            """
            upstream = "127.0.0.1:8000"
            [concurrency]
            hard_limit = 100
            [[route]]
            name = "r"
            path_prefix = "/r/"
            [route.retry]
            backoff = "500ms"
            [route.breaker]
            recovery_timeout = "10m"
            window = 5
            [route.concurrency]
            soft_limit = 300
            """,
            fileName: "proxy.conf"
        )
        #expect(configuration.concurrency.softLimit == 100)
        #expect(configuration.concurrency.hardLimit == 100)
        let policy = try #require(configuration.routes.first { $0.name == "r" }).policy
        #expect(policy.retry.maxBackoff == .milliseconds(500))
        #expect(policy.breaker.maxRecoveryTimeout == .seconds(600))
        #expect(policy.breaker.minimumRequests == 5)
        #expect(policy.concurrency?.hardLimit == 300)
        #expect(problems("upstream = \"127.0.0.1:8000\"\n[defaults.retry]\nbackoff = \"2s\"\nmax_backoff = \"1s\"\n")
            == ["proxy.conf:4: defaults.retry.max_backoff: must not be shorter than backoff"])
    }

    @Test func addressesThatCannotWorkTogetherAreRefused() {
        #expect(problems("listen = \"0.0.0.0:8080\"\nupstream = \"127.0.0.1:8080\"\n")
            == ["proxy.conf:2: upstream: is the proxy's own listen address (0.0.0.0:8080): every request would come back to it"])
        #expect(problems("listen = \"0.0.0.0:8080\"\nupstream = \"127.0.0.1:8000\"\n").isEmpty)
        #expect(problems("listen = \"0.0.0.0:8080\"\n[app]\ncommand = [\"app\", \"{port}\"]\nbase_port = 8079\nworkers = 2\n")
            == ["proxy.conf:4: app.base_port: the app's ports 8079-8080 include listen's (8080): the app could never listen"])
        #expect(problems("listen = \"0.0.0.0:8000\"\n[app]\ncommand = [\"app\"]\n")
            == ["proxy.conf:2: app.base_port: the app's port 8000 is listen's: the app could never listen"])
        // One worker without {port} uses `upstream` as it is: base_port (8000 by default) is
        // not the app's port then.
        #expect(problems("listen = \"0.0.0.0:8000\"\nupstream = \"127.0.0.1:3000\"\n[app]\ncommand = [\"node\", \"server.js\"]\n").isEmpty)
        #expect(problems("listen = \"0.0.0.0:8080\"\n[app]\ncommand = [\"app\"]\nworkers = 2\n")
            == [#"proxy.conf:3: app.command: workers = 2 needs {port} in the command, or they would share one port"#])
    }

    @Test func aRateOutOfRangeIsNamed() {
        let text = "upstream = \"127.0.0.1:8000\"\n[[route]]\nname = \"a\"\npath = \"/\"\n[route.breaker]\nfailure_rate = 1.5\n"
        #expect(problems(text) == ["proxy.conf:6: route[1].breaker.failure_rate: must be between 0.01 and 1, got 1.5"])
    }

    /// A route that an earlier one leaves nothing to match is a mistake in the file: routes
    /// match in file order, so `/api/` before `/api/v1/webhooks/` takes every webhook.
    /// Narrower methods, or the narrower path first, are fine.
    @Test func aRouteAnEarlierOneLeavesNothingToMatchIsRefused() throws {
        let route = { (name: String, key: String, path: String, methods: String) in
            "[[route]]\nname = \"\(name)\"\n\(key) = \"\(path)\"\n" + (methods.isEmpty ? "" : "methods = [\(methods)]\n")
        }
        let upstream = "upstream = \"127.0.0.1:8000\"\n"
        #expect(problems(upstream + route("api", "path_prefix", "/api/", "") + route("hooks", "path_prefix", "/api/v1/hooks/", ""))
            == [#"proxy.conf:7: route[2].path_prefix: can never match: route "api" comes first and takes all its requests (routes match in file order; put the narrower one first)"#])
        #expect(problems(upstream + route("a", "path", "/x", "\"GET\", \"POST\"") + route("b", "path", "/x", "\"GET\""))
            == [#"proxy.conf:8: route[2].path: can never match: route "a" comes first and takes all its requests (routes match in file order; put the narrower one first)"#])
        #expect(problems(upstream + route("hooks", "path_prefix", "/api/v1/hooks/", "") + route("api", "path_prefix", "/api/", "")).isEmpty)
        #expect(problems(upstream + route("reads", "path_prefix", "/api/", "\"GET\"") + route("api", "path_prefix", "/api/", "")).isEmpty)
        #expect(problems(upstream + route("exact", "path", "/api", "") + route("api", "path_prefix", "/api", "")).isEmpty)
    }

    @Test func routeMistakesAreEachReported() {
        let text = """
            upstream = "127.0.0.1:8000"
            [[route]]
            name = "api"
            path = "/a"
            path_prefix = "/b"
            [[route]]
            name = "api"
            path_prefix = "/api/"
            [[route]]
            name = "noroute"
            [[route]]
            name = "r"
            path = "relative"
            [route.retry]
            on = ["reset", "teapot"]
            """
        #expect(
            problems(text) == [
                "proxy.conf:5: route[1].path_prefix: set either path or path_prefix, not both",
                #"proxy.conf:7: route[2].name: duplicate route name "api""#,
                "proxy.conf:9: route[3]: a route needs path or path_prefix",
                #"proxy.conf:13: route[4].path: must be a path starting with "/" (no spaces, control characters, query or fragment), got "relative""#,
                #"proxy.conf:15: route[4].retry.on: unknown condition "teapot": use "connect-failure", "reset", "timeout" or a status code"#,
            ]
        )
    }

    /// A probe may ask with a query (`/health?deep=1`); a line break in a path would end the
    /// probe's request line, or a route's, early.
    @Test func aProbePathMayCarryAQueryButNoPathALineBreak() throws {
        let configuration = try ConfigLoader.parse("upstream = \"127.0.0.1:8000\"\n[readiness]\npath = \"/health?deep=1\"\n", fileName: "proxy.conf")
        #expect(configuration.readiness?.path == "/health?deep=1")
        #expect(problems("upstream = \"127.0.0.1:8000\"\n[readiness]\npath = \"/health\\r\\nX-Evil: 1\"\n")
            == [#"proxy.conf:3: readiness.path: must be a path starting with "/" (no spaces, control characters or fragment), got "/health\r\nX-Evil: 1""#])
    }

    @Test func aMissingUpstreamHasNoLine() {
        #expect(problems("listen = \"0.0.0.0:8080\"\n") == [#"proxy.conf: upstream: missing required key (the app's "host:port" or "unix:/path")"#])
    }

    @Test func anUpstreamMayBeLeftOutInSupervisorMode() throws {
        let config = try ConfigLoader.parse("[app]\ncommand = [\"app\"]\n", fileName: "proxy.conf")
        #expect(config.upstream == nil)
        #expect(config.app?.command == ["app"])
    }

    @Test func aBadAddressIsExplained() {
        #expect(problems("upstream = \"localhost\"\nlisten = \"0.0.0.0:99999\"\n") == [
            #"proxy.conf:1: upstream: invalid address "localhost": use "host:port" or "unix:/absolute/path""#,
            #"proxy.conf:2: listen: invalid address "0.0.0.0:99999": use "host:port", like "0.0.0.0:8080""#,
        ])
    }

    /// Port 0 is a fine `listen` (the system picks one) but names no app.
    @Test func anUpstreamOnPortZeroIsRefused() {
        #expect(problems("upstream = \"127.0.0.1:0\"\n") == [#"proxy.conf:1: upstream: port 0 in "127.0.0.1:0": give the port the app listens on"#])
    }

    /// A request id header named like a field the proxy acts on would be taken for it: `Host`
    /// would fail every request's Host check, `Content-Length` would frame answers twice.
    @Test func aRequestIDHeaderTheProxyUsesItselfIsRefused() {
        for name in ["Host", "content-length", "Transfer-Encoding", "Connection", "traceparent", "X-Forwarded-For", "Content-Type"] {
            #expect(
                problems("upstream = \"127.0.0.1:8000\"\n[trace]\nrequest_id_header = \"\(name)\"\n") == [
                    #"proxy.conf:3: trace.request_id_header: "\#(name)" is a field the proxy reads or writes itself: name one of its own, like "X-Request-ID""#
                ]
            )
        }
        #expect(problems("upstream = \"127.0.0.1:8000\"\n[trace]\nrequest_id_header = \"X-Correlation-ID\"\n").isEmpty)
    }

    @Test func aSyntaxErrorHasItsLine() {
        let found = problems("upstream = \"127.0.0.1:8000\"\n[server\nthreads = 1\n")
        #expect(found.count == 1)
        #expect(found.first?.hasPrefix("proxy.conf:2: syntax error:") == true, "\(found)")
    }

    @Test func everyProblemIsReportedAtOnce() {
        let text = "upstream = \"127.0.0.1:8000\"\n[server]\nthreads = 0\nbogus = true\n[log]\nlevel = \"loud\"\n"
        #expect(problems(text) == [
            "proxy.conf:3: server.threads: must be between 1 and 256, got 0",
            "proxy.conf:4: server.bogus: unknown key",
            "proxy.conf:6: log.level: unknown level \"loud\": use one of trace, debug, info, notice, warning, error, critical",
        ])
    }

    @Test func defaultsTakeNoRouteKeys() {
        #expect(problems("upstream = \"127.0.0.1:8000\"\n[defaults]\nname = \"x\"\n") == ["proxy.conf:3: defaults.name: unknown key"])
    }

    @Test func aMissingFileIsNamed() {
        #expect(throws: ConfigErrors.self) { try ConfigLoader.load(path: "/nonexistent/proxy.conf") }
        do {
            _ = try ConfigLoader.load(path: "/nonexistent/proxy.conf")
        } catch {
            #expect(error.description == "/nonexistent/proxy.conf: no such file")
        }
    }

    @Test(arguments: [
        ("250ms", Duration.milliseconds(250)), ("2s", .seconds(2)), ("1m", .seconds(60)), ("1.5s", .milliseconds(1500)), ("1h", .seconds(3600)),
    ])
    func durationsParse(text: String, expected: Duration) {
        #expect(ConfigUnits.duration(text) == expected)
    }

    @Test(arguments: ["", "5", "s", "-1s", "1 parsec", "1.2.3s", "abc"])
    func badDurationsAreRejected(text: String) {
        #expect(ConfigUnits.duration(text) == nil)
    }

    @Test func sizesParse() {
        #expect(ConfigUnits.size("64KB") == 65536)
        #expect(ConfigUnits.size("10MB") == 10_485_760)
        #expect(ConfigUnits.size("1GiB") == 1 << 30)
        #expect(ConfigUnits.size("512B") == 512)
        #expect(ConfigUnits.size("10 parsecs") == nil)
    }

    @Test func aCRLFFileHasItsLines() {
        #expect(problems("upstream = \"127.0.0.1:8000\"\r\n[server]\r\nthreads = \"two\"\r\n") == [
            #"proxy.conf:3: server.threads: expected an integer, got string "two""#
        ])
    }

    /// The same port on the same address, or on a wildcard that covers the other (`0.0.0.0`
    /// beside the default admin `127.0.0.1:9901`), would fail at bind with a bare "address
    /// already in use"; `check` says which two.
    @Test func listenClashingWithTheDefaultAdminListenPointsAtListen() {
        #expect(problems("listen = \"127.0.0.1:9901\"\nupstream = \"127.0.0.1:8000\"\n") == [
            "proxy.conf:1: listen: must differ from admin.listen (127.0.0.1:9901): both would take port 9901"
        ])
        #expect(problems("listen = \"0.0.0.0:9901\"\nupstream = \"127.0.0.1:8000\"\n") == [
            "proxy.conf:1: listen: must differ from admin.listen (127.0.0.1:9901): both would take port 9901"
        ])
        #expect(problems("listen = \"[::]:8080\"\nupstream = \"127.0.0.1:8000\"\n[admin]\nlisten = \"127.0.0.1:8080\"\n") == [
            "proxy.conf:4: admin.listen: must differ from listen ([::]:8080): both would take port 8080"
        ])
        #expect(problems("listen = \"0.0.0.0:8080\"\nupstream = \"127.0.0.1:8000\"\n[admin]\nlisten = \"[::1]:8080\"\n").isEmpty)
        #expect(problems("listen = \"0.0.0.0:8080\"\nupstream = \"127.0.0.1:8000\"\n").isEmpty)
    }

    /// toml++ inside TOMLKit aborts the process on these (found by fuzz/FuzzConfig): a reload of
    /// such a file must be refused, not take the proxy down.
    @Test(arguments: [
        ("[:\n", 1), ("upstream = \"127.0.0.1:8000\"\n[[ =\n", 2), ("[\nx = 1\n", 1),
        ("e = 1979-05-27T:\n", 1), ("a = 1\nb = [\n  1979-05-27T\n]\n", 3), ("\u{FEFF}[:", 1), ("on = [\"reset\",}\"x\"]\n", 1), ("a = [\n}]\n", 2),
    ])
    func parserCrashersAreSyntaxErrors(text: String, line: Int) {
        let found = problems(text)
        #expect(found.count == 1)
        #expect(found.first?.hasPrefix("proxy.conf:\(line): syntax error:") == true, "\(found)")
    }

    @Test func theCrasherCheckLeavesStringsAndGoodTimesAlone() throws {
        let text = #"""
            upstream = "127.0.0.1:8000"
            [[route]]
            name = "a"
            path_prefix = "/a"
            [route.fallback]
            status = 503
            body = """
            [: not a table
            at 1979-05-27T: nothing
            """
            content_type = 'text/plain; 1979-05-27Tx'
            # [: a comment 1979-05-27T:
            """#
        let config = try ConfigLoader.parse(text, fileName: "proxy.conf")
        #expect(config.routes.first?.policy.fallback?.body.contains("[: not a table") == true)
        #expect(TOMLPrecheck.findings(in: "t = 1979-05-27T07:32:00Z\nd = 1979-05-27\n[[x]]\n[ y ]\n['z']\n").isEmpty)
        #expect(TOMLPrecheck.findings(in: "a = [ { x = 1 }, { y = [2, 3] } ]\nb = [\n  1, # c\n]\n").isEmpty)
    }

    @Test func tablesOnlyImpliedOrInlineStillHaveALine() {
        #expect(problems("upstream = \"127.0.0.1:8000\"\n[route.fallback]\nstatus = 503\n") == [
            "proxy.conf:2: route: expected an array of tables ([[route]]), got a table"
        ])
        #expect(problems("upstream = \"127.0.0.1:8000\"\nroute = [ { name = \"a\" } ]\n") == [
            "proxy.conf:2: route[1]: a route needs path or path_prefix"
        ])
        #expect(problems("upstream = \"127.0.0.1:8000\"\n\n[[roude]]\nname = \"a\"\n") == ["proxy.conf:3: roude: unknown key"])
        #expect(problems("\u{FEFF}upstream = \"127.0.0.1:8000\"\ntream = 1\n") == ["proxy.conf:2: tream: unknown key"])
    }

    @Test func aFallbackThatWouldBreakTheResponseIsRefused() {
        let route = "upstream = \"127.0.0.1:8000\"\n[[route]]\nname = \"a\"\npath_prefix = \"/a\"\n[route.fallback]\n"
        #expect(problems(route + "content_type = \"text/plain\\r\\nSet-Cookie: x=1\"\n") == [
            "proxy.conf:6: route[1].fallback.content_type: must not contain line breaks or control characters"
        ])
        #expect(problems(route + "status = 101\n").first?.contains("route[1].fallback.status") == true)
        #expect(problems(route + "status = 204\nbody = \"x\"\n").first?.contains("carry no body") == true)
    }
}
